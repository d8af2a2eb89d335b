"""pytest plugin for the DCP conformance suite (expanded by the spec_tests work)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dcp", "DCP storage-backend conformance")
    group.addoption("--dcp-backend", default=None, help="backend under test: built-in name or module:attr")
