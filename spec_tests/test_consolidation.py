"""Spec section 8: consolidated output (properties in spec_tests.properties.consolidation)."""

from spec_tests.properties.consolidation import ConsolidationProperties


class TestConsolidation(ConsolidationProperties):
    """Consolidation properties against the backend chosen with --dcp-backend."""
