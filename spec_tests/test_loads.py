"""Spec section 18: loads as jobs do them (properties in spec_tests.properties.loads)."""

from spec_tests.properties.loads import LoadProperties


class TestLoads(LoadProperties):
    """Load properties against the backend chosen with --dcp-backend."""
