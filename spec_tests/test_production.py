"""Spec section 9: collective-free saves and plan caching (spec_tests.properties.production)."""

from spec_tests.properties.production import ProductionSaveProperties


class TestProduction(ProductionSaveProperties):
    """Collective-free and plan-caching properties against the backend under test."""
