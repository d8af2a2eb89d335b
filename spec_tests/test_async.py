"""Spec section 9: dcp.async_save (properties in spec_tests.properties.asynchronous)."""

from spec_tests.properties.asynchronous import AsyncProperties


class TestAsync(AsyncProperties):
    """Async-save properties against the backend chosen with --dcp-backend."""
