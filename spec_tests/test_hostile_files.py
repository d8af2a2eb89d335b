"""Spec section 10: hostile files (properties in spec_tests.properties.hostile_files)."""

from spec_tests.properties.hostile_files import HostileFilesProperties


class TestHostileFiles(HostileFilesProperties):
    """Hostile-file properties against the backend chosen with --dcp-backend."""
