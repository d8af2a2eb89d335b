"""Spec section 10: adversity (properties in spec_tests.properties.adversity)."""

from spec_tests.properties.adversity import AdversityProperties


class TestAdversity(AdversityProperties):
    """Adversity properties against the backend chosen with --dcp-backend."""
