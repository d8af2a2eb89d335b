"""Spec section 6: multi-process (properties in spec_tests.properties.multiprocess)."""

from spec_tests.properties.multiprocess import MultiprocessProperties


class TestMultiprocess(MultiprocessProperties):
    """Multi-process properties against the backend chosen with --dcp-backend."""
