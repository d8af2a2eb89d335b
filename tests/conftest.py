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


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist (CI runs the tests on both cores) each worker's environment names it
    # a worker; the pytest runs these tests start (the suite, benchmarks) inherit it, and
    # pytest-benchmark then disables itself as if they ran under xdist too. They do not.
    for name in [n for n in os.environ if n.startswith("PYTEST_XDIST_")]:
        del os.environ[name]
