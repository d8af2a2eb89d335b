"""Replicated loads, shared reads off and on: ``python -m perf.replicated [--procs 2,4]``.

The ``bf16x64-replicated`` workload (perf/README.md): the ``bf16x64`` tensors saved once,
loaded whole by every one of N real processes (one gloo group), as data-parallel ranks
resume. Each round loads the checkpoint through ``dcp_impl-fs``'s reader with
``share_reads=None`` and then with ``share_reads="shm"`` (alternating, so both see the same
machine), every load checked bit for bit. Rank 0 times each load between barriers (the
slowest rank sets the time). Printed per process count: the medians in seconds, the
aggregate GB/s delivered (N times the workload's bytes over that time), the bytes each mode
reads from storage (N copies off, one on) and the speed-up of sharing.

``--latency-ms`` adds that many milliseconds to every read call the store serves (each
``preadv`` of up to 1 MiB: a verified read lands in pieces that big), as an object store's
first-byte latency would: then a byte from storage costs more than a memory copy, which is
what sharing trades it for.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from dcp_impl import FileSystemReader, FileSystemWriter
from dcp_impl.store import LocalStore
from dcp_impl.transfer import Source
from perf.workloads import bf16x64_specs, make_tensors, parse_size
from spec_tests.api import check_ranks, spawn_ranks

__all__ = ["WORKLOAD", "MODES", "SlowStore", "measure", "rank_worker", "main"]

WORKLOAD = "bf16x64-replicated"
MODES: dict[str, Any] = {"off": None, "shm": "shm"}


class SlowStore(LocalStore):
    """A local directory whose every read call first waits ``latency`` seconds."""

    def __init__(self, root: str, latency: float) -> None:
        super().__init__(root)
        self.latency = latency

    def opener(self, path: str) -> Source:
        # docstring inherited
        return _SlowSource(super().opener(path), self.latency)


class _SlowSource:
    """A source whose every read first waits (first-byte latency)."""

    def __init__(self, inner: Source, latency: float) -> None:
        self._inner = inner
        self._latency = latency

    def preadv(self, buffers: list[memoryview], offset: int) -> int:
        # docstring inherited
        time.sleep(self._latency)
        return self._inner.preadv(buffers, offset)

    def close(self) -> None:
        # docstring inherited
        self._inner.close()


def measure(
    procs: int, size: int, rounds: int, root: str, latency: float = 0.0
) -> dict[str, list[float]]:
    """Seconds per load, ``{mode: [...]}``, with ``procs`` ranks."""
    with tempfile.TemporaryDirectory(prefix="perf-rep-") as scratch:
        out = str(Path(scratch) / "times.json")
        outcomes = spawn_ranks(rank_worker, procs, size, rounds, root, out, latency, timeout=3600.0)
        check_ranks(outcomes)
        times: dict[str, list[float]] = json.loads(Path(out).read_text())
    return times


def rank_worker(
    rank: int, world: int, size: int, rounds: int, root: str, out: str, latency: float
) -> None:
    """One rank: save the workload once (DCP writes each replicated tensor once), then load
    all of it ``rounds`` times in each mode."""
    full = make_tensors(bf16x64_specs(size))
    path = f"{root}/{WORKLOAD}-{world}"
    dcp_save(full, storage_writer=FileSystemWriter(path))
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode, share in MODES.items():
            targets = {k: torch.zeros_like(v) for k, v in full.items()}
            store = SlowStore(path, latency) if latency else path
            reader = FileSystemReader(store, share_reads=share)
            dist.barrier()
            start = time.perf_counter()
            dcp_load(targets, storage_reader=reader)
            dist.barrier()
            times[mode].append(time.perf_counter() - start)
            for k, v in full.items():
                assert torch.equal(targets[k].view(torch.int16), v.view(torch.int16)), (
                    f"rank {rank}: {mode} loaded {k} wrong"
                )
            del targets
    if rank == 0:
        Path(out).write_text(json.dumps(times))


def main(argv: list[str] | None = None) -> None:
    """Print, per process count, each mode's median load time and the speed-up of sharing."""
    parser = argparse.ArgumentParser(prog="python -m perf.replicated", description=__doc__)
    parser.add_argument("--procs", default="2,4", help="comma-separated process counts")
    parser.add_argument("--size", default="64MiB", help="workload bytes, as --perf-size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", default=None, help="checkpoint folder (default: a temp dir)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added per read call")
    args = parser.parse_args(argv)
    size, procs = parse_size(args.size), [int(p) for p in args.procs.split(",")]
    root = args.root or tempfile.mkdtemp(prefix="perf-rep-ckpt-")
    print(
        f"{WORKLOAD}: {size / 2**20:.0f} MiB loaded whole by every rank, {args.rounds} rounds, "
        f"cpu/gloo, dcp_impl-fs, +{args.latency_ms:g} ms per read call; median seconds, "
        "aggregate GB/s delivered (N x bytes / time)"
    )
    try:
        for n in procs:
            _report(n, size, measure(n, size, args.rounds, root, args.latency_ms / 1000))
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)


def _report(n: int, size: int, times: dict[str, list[float]]) -> None:
    cells = []
    for mode in MODES:
        seconds = statistics.median(times[mode])
        read = (n if mode == "off" else 1) * size
        cells.append(
            f"{mode}: {seconds:.3f} s, {n * size / seconds / 1e9:.2f} GB/s, "
            f"{read / 2**20:.0f} MiB from storage"
        )
    ratio = statistics.median(times["off"]) / statistics.median(times["shm"])
    print(f"  {n}p  " + "  |  ".join(cells) + f"  |  shm speed-up {ratio:.2f}x")


if __name__ == "__main__":
    main()
