"""The suite's commands, ``python -m spec_tests matrix|selftest|probe``, in one place.

- :mod:`.main`: the command line and the ``matrix`` command;
- :mod:`.runs`: one suite run on one backend in its own pytest subprocess (matrix and selftest);
- :mod:`.selftest`: the ``selftest`` command over :mod:`spec_tests.selftest`'s catalogue;
- :mod:`.probe`: the ``probe`` command (which capabilities hold, tried once each).
"""
