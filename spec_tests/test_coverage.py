"""Spec section 3: chunks short of a tensor's end (properties in spec_tests.properties.coverage)."""

from spec_tests.properties.coverage import CoverageProperties


class TestCoverage(CoverageProperties):
    """Coverage properties against the backend chosen with --dcp-backend."""
