"""Spec section 5, threaded writers (properties in spec_tests.properties.workers)."""

from spec_tests.properties.workers import WorkerFailureProperties


class TestWorkers(WorkerFailureProperties):
    """Worker-thread failure properties against the backend chosen with --dcp-backend."""
