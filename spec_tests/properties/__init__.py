"""The conformance properties, one module per spec section (see docs/conformance.md).

Each module holds a ``<Section>Properties`` class whose test methods use the
``dcp_backend`` and ``dcp_location`` fixtures; ``spec_tests/test_<section>.py``
subclasses it and :class:`spec_tests.kit.BackendTests` combines them all.
"""
