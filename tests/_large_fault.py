"""A backend that fails only the suite's large cases, for tests/test_bounded_memory.py.

``dcp_impl-fs`` whose writer stages each item of 16 MiB or more through a buffer that gets
its last byte wrong: the off-by-one of a chunked copy loop that only large items take.
Imported by the suite's subprocess as ``_large_fault:LastByteOfLargeItems`` (``tests/`` on
its ``PYTHONPATH``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.planner import SavePlanner, WriteItem

from spec_tests.selftest.wrap import SavePlannerProxy, Wrapped, WrappedWriter

__all__ = ["LARGE_ITEM_BYTES", "LastByteOfLargeItems"]

LARGE_ITEM_BYTES = 16 << 20


class _LastByteWrong(SavePlannerProxy):
    def resolve_data(self, write_item: WriteItem) -> Any:
        data = self.inner.resolve_data(write_item)
        if not isinstance(data, torch.Tensor) or data.nbytes < LARGE_ITEM_BYTES:
            return data
        staged = data.contiguous().clone()
        raw = staged.reshape(-1).view(torch.uint8)
        raw[-1] ^= 1  # still a valid bool: 0 <-> 1
        return staged


class _Writer(WrappedWriter):
    def save_planner(self, planner: SavePlanner) -> SavePlanner:
        # docstring inherited
        return _LastByteWrong(planner)


class LastByteOfLargeItems(Wrapped):
    """Items of 16 MiB or more are stored with their last byte flipped."""

    base = "dcp_impl-fs"
    writer = _Writer
