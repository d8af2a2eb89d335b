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
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

import dcp_impl
from dcp_impl.layout import Box
from spec_tests.api import Piece, PieceLoadPlanner, driver

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


def _halves(tensors: int) -> list[Piece]:
    """Each matrix as its two column halves (two destination pieces), filled with -1."""
    half = ROWS // 2
    return [
        Piece(
            f"t{i:03d}", (ROWS, ROWS), Box((0, col), (ROWS, half)), torch.full((ROWS, half), -1.0)
        )
        for i in range(tensors)
        for col in (0, half)
    ]


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
    pieces = _halves(args.tensors)
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    start = _status("VmRSS")
    driver.load([reader], args.path, [PieceLoadPlanner(pieces)])
    peak = _status("VmHWM")
    exact = all(
        torch.equal(torch.cat([p.tensor for p in pieces if p.fqn == fqn], dim=1), value)
        for fqn, value in state(args.tensors).items()
    )
    print(json.dumps({"start": start, "peak": peak, "exact": exact}))


if __name__ == "__main__":
    main()
