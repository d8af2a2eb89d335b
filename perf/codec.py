"""The metadata codec against pickle at scale: ``python -m perf.codec [--chunks 100k,1m]``.

Builds one ``Metadata`` of ``tensors x shards`` row-sharded bf16 tensors, each chunk with an
``ItemLocation`` and a checksum (what dcp_impl's filesystem backend writes), then times, in
one process and interleaved round by round, ``pickle.dumps``/``pickle.loads`` of it (what
torch's own ``.metadata`` file is) and ``dcp_impl.metadata.dumps``/``loads``. It prints the
medians, their ratios, the document sizes and the peak memory each call allocates
(tracemalloc, measured in rounds of their own since tracing slows every allocation).
perf/README.md ("Metadata codec") has the figures and the command that made them.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)

from dcp_impl import metadata
from perf.hostile_metadata import peak

__all__ = ["SCALES", "Row", "scale_metadata", "compare", "main"]

#: Named sizes: (tensors, row shards per tensor).
SCALES = {"100k": (100, 1000), "1m": (1000, 1000), "6m": (6000, 1000)}


def scale_metadata(tensors: int, shards: int, *, rows: int = 8, cols: int = 4096) -> Metadata:
    """``tensors`` bf16 ``[shards * rows, cols]`` tensors, each saved as ``shards`` row shards."""
    entries: dict[str, TensorStorageMetadata | BytesStorageMetadata] = {}
    storage: dict[MetadataIndex, metadata.ItemLocation] = {}
    item = rows * cols * 2
    for t in range(tensors):
        fqn = f"model.layers.{t}.mlp.weight"
        chunks = []
        for s in range(shards):
            chunk = ChunkStorageMetadata(torch.Size([s * rows, 0]), torch.Size([rows, cols]))
            chunks.append(chunk)
            digest = (t * shards + s) * 0x9E3779B97F4A7C15 % 2**64
            storage[MetadataIndex(fqn, chunk.offsets, s)] = metadata.ItemLocation(
                f"data-{s:032x}-r{s}-0.bin", t * item, item, f"xxh3_64:{digest:016x}"
            )
        size = torch.Size([shards * rows, cols])
        entries[fqn] = TensorStorageMetadata(TensorProperties(torch.bfloat16), size, chunks)
    return Metadata(
        entries,
        planner_data={fqn: tuple(fqn.split(".")) for fqn in entries},
        storage_data=storage,
        storage_meta=StorageMeta("/ckpt/step-100", "save-1", None, []),
        version="1.0.0",
    )


@dataclass(frozen=True, slots=True)
class Row:
    """One operation's medians (seconds) and peak traced memory (bytes), pickle vs dcp_impl."""

    op: str
    pickle_s: float
    dcp_impl_s: float
    pickle_peak: int
    dcp_impl_peak: int

    @property
    def speedup(self) -> float:
        """How many times faster dcp_impl is than pickle."""
        return self.pickle_s / self.dcp_impl_s


def _timed(call: Callable[[], Any]) -> float:
    gc.collect()  # each round starts from the same heap, not with the last round's garbage
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def compare(md: Metadata, rounds: int) -> tuple[list[Row], dict[str, int]]:
    """Interleaved medians of ``rounds`` rounds per call, peaks, and the two documents' sizes."""
    pickled = pickle.dumps(md)
    text = metadata.dumps(md).encode("utf-8")  # what the backends store and read back
    assert metadata.loads(text) == md
    calls: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "dumps": (lambda: pickle.dumps(md), lambda: metadata.dumps(md).encode("utf-8")),
        "loads": (lambda: pickle.loads(pickled), lambda: metadata.loads(text)),
    }
    rows = []
    for op, (theirs, ours) in calls.items():
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(rounds):
            times[0].append(_timed(theirs))
            times[1].append(_timed(ours))
        medians = [statistics.median(t) for t in times]
        rows.append(Row(op, medians[0], medians[1], peak(theirs), peak(ours)))
    return rows, {"pickle": len(pickled), "dcp_impl": len(text)}


def main(argv: list[str] | None = None) -> None:
    """Print the comparison for each scale asked for."""
    parser = argparse.ArgumentParser(prog="python -m perf.codec", description=__doc__)
    parser.add_argument("--chunks", default="100k,1m", help=f"comma-separated: {list(SCALES)}")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    for name in args.chunks.split(","):
        tensors, shards = SCALES[name]
        rows, sizes = compare(scale_metadata(tensors, shards), args.rounds)
        n = tensors * shards
        print(f"{name}: {tensors} tensors x {shards} row shards = {n} chunks, {args.rounds} rounds")
        print(
            f"  bytes: pickle {sizes['pickle']}, dcp_impl {sizes['dcp_impl']} "
            f"({sizes['dcp_impl'] / n:.1f} per chunk)"
        )
        for r in rows:
            print(
                f"  {r.op}: pickle {r.pickle_s * 1e3:.0f} ms, dcp_impl {r.dcp_impl_s * 1e3:.0f} ms"
                f" -> {r.speedup:.2f}x; peak MiB pickle {r.pickle_peak / 2**20:.0f}, "
                f"dcp_impl {r.dcp_impl_peak / 2**20:.0f}"
            )


if __name__ == "__main__":
    main()
