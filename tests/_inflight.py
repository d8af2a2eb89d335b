"""A load whose peak resident memory is measured: run as ``python -m _inflight`` (tests/ on
the path) by tests/test_inflight.py, it prints one JSON line.

The checkpoint holds ``TENSORS`` float32 matrices of ``ROWS x ROWS``, each stored as one
chunk. The load allocates and touches every destination, resets the process's peak
(``/proc/self/clear_refs``), loads, and reports the peak over the resident memory it
started from: what the load itself held beyond its destinations. Each matrix is loaded as
its two column halves, so every stored item is read in part (resharded) and, verified,
whole before any byte is used.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, ReadItem
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

import dcp_impl
from spec_tests.sim import driver

MIB = 1 << 20
ROWS = 1024
TENSORS = 64
ITEM = ROWS * ROWS * 4
"""Bytes of one stored item (4 MiB); the checkpoint is ``TENSORS`` of them (256 MiB)."""


def state(tensors: int = TENSORS) -> dict[str, torch.Tensor]:
    """The saved values: ``tensors`` matrices."""
    gen = torch.Generator().manual_seed(0)
    return {f"t{i:03d}": torch.rand(ROWS, ROWS, generator=gen) for i in range(tensors)}


def save(path: str, backend: str, tensors: int = TENSORS) -> None:
    """Save :func:`state` to ``path`` with ``backend`` (``fs`` or ``hf``)."""
    writer: Any
    if backend == "fs":
        writer = dcp_impl.FileSystemWriter(path, sync_files=False)
    else:
        writer = dcp_impl.HuggingFaceWriter(path, sync_files=False)
    dcp_save(state(tensors), storage_writer=writer, no_dist=True)


class _Halves(LoadPlanner):
    """Loads each matrix into its two column halves (two destination chunks)."""

    def __init__(self, halves: dict[str, list[torch.Tensor]]) -> None:
        self._halves = halves
        self._metadata: Metadata | None = None

    def set_up_planner(
        self, state_dict: Any, metadata: Metadata | None = None, is_coordinator: bool = False
    ) -> None:
        self._metadata = metadata

    def create_local_plan(self) -> LoadPlan:
        assert self._metadata is not None
        items: list[ReadItem] = []
        half = ROWS // 2
        chunks = [
            ChunkStorageMetadata(torch.Size([0, 0]), torch.Size([ROWS, half])),
            ChunkStorageMetadata(torch.Size([0, half]), torch.Size([ROWS, half])),
        ]
        for fqn in self._halves:
            stored = self._metadata.state_dict_metadata[fqn]
            assert isinstance(stored, TensorStorageMetadata)
            items += create_read_items_for_chunk_list(fqn, stored, chunks)
        return LoadPlan(items)

    def create_global_plan(self, global_plan: list[LoadPlan]) -> list[LoadPlan]:
        return global_plan

    def finish_plan(self, central_plan: LoadPlan) -> LoadPlan:
        return central_plan

    def load_bytes(self, read_item: ReadItem, value: Any) -> None:
        raise AssertionError("the checkpoint holds tensors only")

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        index = read_item.dest_index
        assert index.index is not None
        target = self._halves[index.fqn][index.index]
        return narrow_tensor_by_index(target, read_item.dest_offsets, read_item.lengths)

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        pass  # the data is in place


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert match is not None, field
    return int(match.group(1)) * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--backend", choices=["fs", "hf"], default="fs")
    parser.add_argument("--cap", type=int, default=None)
    parser.add_argument("--tensors", type=int, default=TENSORS, help="as the save had")
    args = parser.parse_args()
    reader: Any
    if args.backend == "fs":
        reader = dcp_impl.FileSystemReader(args.path, max_inflight_bytes=args.cap)
    else:
        reader = dcp_impl.HuggingFaceReader(args.path, max_inflight_bytes=args.cap)
    halves = {
        f"t{i:03d}": [torch.full((ROWS, ROWS // 2), -1.0) for _ in range(2)]
        for i in range(args.tensors)
    }
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    start = _status("VmRSS")
    driver.load([reader], args.path, [_Halves(halves)])
    peak = _status("VmHWM")
    exact = all(torch.equal(torch.cat(halves[k], dim=1), v) for k, v in state(args.tensors).items())
    print(json.dumps({"start": start, "peak": peak, "exact": exact}))


if __name__ == "__main__":
    main()
