"""The project's test options: ``--nightly`` (or ``DCP_NIGHTLY=1``) runs the nightly tests too."""

from __future__ import annotations

import os

import pytest

NIGHTLY_ENV = "DCP_NIGHTLY"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--nightly",
        action="store_true",
        help=f"also run the tests marked nightly (long repeats); {NIGHTLY_ENV}=1 does the same",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--nightly") or os.environ.get(NIGHTLY_ENV, "") not in ("", "0"):
        return
    nightly = [item for item in items if item.get_closest_marker("nightly")]
    if nightly:
        config.hook.pytest_deselected(items=nightly)
        items[:] = [item for item in items if not item.get_closest_marker("nightly")]
