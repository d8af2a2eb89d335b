"""Spec section 5: faults (properties in spec_tests.properties.faults)."""

from spec_tests.properties.faults import FaultProperties


class TestFaults(FaultProperties):
    """Fault properties against the backend chosen with --dcp-backend."""
