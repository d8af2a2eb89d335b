"""Spec section 10: metadata at scale (properties in spec_tests.properties.scale)."""

from spec_tests.properties.scale import ScaleProperties


class TestScale(ScaleProperties):
    """Many chunks cost linear time and memory against the backend chosen with --dcp-backend."""
