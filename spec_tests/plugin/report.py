"""The ``--dcp-report`` hooks: pytest's reports, fed to the matrix's Recorder."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from spec_tests.plugin.results import Recorder

__all__ = ["ReportHooks", "property_name"]


def property_name(item: pytest.Item) -> str:
    """The matrix row of a test: ``<module-stem>::<test function>`` (module without ``test_``)."""
    function = getattr(item, "function", None)
    module = getattr(function, "__module__", None) or item.path.stem
    stem = module.rsplit(".", 1)[-1].removeprefix("test_")
    return f"{stem}::{getattr(item, 'originalname', item.name)}"


class ReportHooks:
    """Feeds pytest's reports to the Recorder; registered only with --dcp-report."""

    def __init__(self, recorder: Recorder, nodeid: Callable[[pytest.Item], str]) -> None:
        self.recorder = recorder
        self.nodeid = nodeid  # the id xfail entries use for an item

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.recorder.names = {
            item.nodeid: (self.nodeid(item), property_name(item)) for item in session.items
        }

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.recorder.add_collection_error(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.recorder.add(report)
