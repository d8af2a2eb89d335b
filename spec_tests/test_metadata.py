"""Spec section 3: metadata (properties in spec_tests.properties.metadata)."""

from spec_tests.properties.metadata import MetadataProperties


class TestMetadata(MetadataProperties):
    """Metadata properties against the backend chosen with --dcp-backend."""
