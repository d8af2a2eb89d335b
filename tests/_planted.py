"""A backend with a slowdown planted from outside the code: the nightly's regression test.

:class:`PlantedFS` is ``dcp_impl-fs`` passed through the self-test's faithful wrapper, with
every ``write_data`` held back by ``DCP_PLANTED_DELAY_S`` seconds (0 when unset). The same
backend, under the same name, is fast one night and slow the next: only the environment
says which, as a regression in a dependency or a slower store would.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from torch.distributed.checkpoint.planner import SavePlan, SavePlanner

from spec_tests.selftest.wrap import Wrapped, WrappedWriter

__all__ = ["DELAY_VARIABLE", "PlantedFS"]

DELAY_VARIABLE = "DCP_PLANTED_DELAY_S"


class _DelayedWriter(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Any:
        time.sleep(float(os.environ.get(DELAY_VARIABLE, "0")))
        return super().write_data(plan, planner)


class PlantedFS(Wrapped):
    """``dcp_impl-fs``, its saves slowed by ``DCP_PLANTED_DELAY_S`` seconds each."""

    base: ClassVar[str] = "dcp_impl-fs"
    writer: ClassVar[type[WrappedWriter]] = _DelayedWriter

    @property
    def name(self) -> str:
        """The same name whatever the delay: the benchmarks of two nights must line up."""
        return "planted-fs"
