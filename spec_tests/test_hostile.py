"""Spec section 7: hostile stored objects (properties in spec_tests.properties.hostile)."""

from spec_tests.properties.hostile import HostileProperties


class TestHostile(HostileProperties):
    """Hostile-checkpoint properties against the backend chosen with --dcp-backend."""
