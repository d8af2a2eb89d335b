"""Spec section 2: sharding and resharding (properties in spec_tests.properties.resharding)."""

from spec_tests.properties.resharding import ReshardingProperties


class TestResharding(ReshardingProperties):
    """Resharding properties against the backend chosen with --dcp-backend."""
