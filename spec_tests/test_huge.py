"""Spec section 7, nightly sizes (properties in spec_tests.properties.huge)."""

from spec_tests.properties.huge import HugeProperties


class TestHuge(HugeProperties):
    """Sizes past 32-bit offsets against the backend chosen with --dcp-backend."""
