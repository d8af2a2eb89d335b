"""The suite's vocabulary, at the bottom of its import graph: what a backend is and is judged by.

- :mod:`.protocol`: the :class:`~.protocol.Backend` protocol and its optional members (imports
  nothing of the suite);
- :mod:`.capabilities`: the capability vocabulary and how a claim is read;
- :mod:`.verdicts`: :class:`~.verdicts.ContractViolation`, the harness's own verdict, and the
  allowed refusals;
- :mod:`.builtins`, :mod:`.reference`: the built-in backends (the reference is in memory);
- :mod:`.registry`: how a ``--dcp-backend`` SPEC names a backend.

Users import these names from :mod:`spec_tests.backends` and :mod:`spec_tests.verdicts`.
"""
