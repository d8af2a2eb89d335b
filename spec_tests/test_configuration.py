"""Spec section 4, configurations (the properties live in spec_tests.properties.configuration)."""

from spec_tests.properties.configuration import ConfigurationProperties


class TestConfiguration(ConfigurationProperties):
    """Configuration properties against the backend chosen with --dcp-backend."""
