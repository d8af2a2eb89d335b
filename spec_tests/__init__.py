"""spec_tests: a hypothesis-powered conformance suite for PyTorch DCP storage backends.

Run it with ``pytest --pyargs spec_tests --dcp-backend=SPEC`` or ``python -m spec_tests
matrix|selftest|probe``. The public doors: :mod:`spec_tests.backends` (the backend contract),
:mod:`spec_tests.verdicts`, :mod:`spec_tests.kit` (``BackendTests``), :mod:`spec_tests.ranks`,
:mod:`spec_tests.s3server`, and :mod:`spec_tests.api` for other packages (perf). The rooms
behind them (``contract``, ``sim``, ``strategies``, ``plugin``, ``properties``, ``selftest``,
``cli``) are described in docs/architecture.md.
"""
