"""Spec section 1: round trip (the properties live in spec_tests.properties.roundtrip)."""

from spec_tests.properties.roundtrip import RoundTripProperties


class TestRoundTrip(RoundTripProperties):
    """Round-trip properties against the backend chosen with --dcp-backend."""
