"""Broadcast or shared memory for shared reads: ``python -m perf.transport [--procs 2,4]``.

N real processes (one gloo group) move one buffer from rank 0 to every other rank, round
after round, two ways: ``dist.broadcast`` (a collective every rank must enter) and what
``share_reads="shm"`` does (rank 0 ``pwrite``s a file into ``/dev/shm`` and renames it, the
others ``preadv`` it into their buffers). Rank 0 times each between barriers; printed: the
median seconds of each, per process count (perf/README.md, "Replicated loads").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from dcp_impl.transfer import SHM_ROOT
from perf.workloads import parse_size
from spec_tests.api import run_ranks

__all__ = ["measure", "rank_worker", "main"]


def measure(procs: int, size: int, rounds: int) -> dict[str, float]:
    """Median seconds of each way, ``{"broadcast": s, "shm": s}``, with ``procs`` ranks."""
    with tempfile.TemporaryDirectory(prefix="perf-transport-") as scratch:
        out = str(Path(scratch) / "times.json")
        run_ranks(rank_worker, procs, size, rounds, out)
        times: dict[str, float] = json.loads(Path(out).read_text())
    return times


def rank_worker(rank: int, world: int, size: int, rounds: int, out: str) -> None:
    """One rank: receive (or send) ``size`` bytes ``rounds`` times each way."""
    buffer = torch.empty(size, dtype=torch.uint8)
    if rank == 0:
        buffer.copy_(torch.arange(size, dtype=torch.uint8))
    raw = memoryview(buffer.numpy())  # type: ignore[arg-type]  # numpy arrays are buffers
    times: dict[str, list[float]] = {"broadcast": [], "shm": []}
    for r in range(rounds):
        dist.barrier()
        start = time.perf_counter()
        dist.broadcast(buffer, src=0)
        dist.barrier()
        times["broadcast"].append(time.perf_counter() - start)
        path = os.path.join(SHM_ROOT, f"perf-transport-{os.getppid()}-{r}")
        dist.barrier()
        start = time.perf_counter()
        if rank == 0:
            fd = os.open(f"{path}.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.pwrite(fd, raw, 0)
            os.close(fd)
            os.replace(f"{path}.tmp", path)
        dist.barrier()
        if rank != 0:
            fd = os.open(path, os.O_RDONLY)
            os.preadv(fd, [raw], 0)
            os.close(fd)
        dist.barrier()
        times["shm"].append(time.perf_counter() - start)
        if rank == 0:
            os.unlink(path)
    if rank == 0:
        Path(out).write_text(json.dumps({k: statistics.median(v) for k, v in times.items()}))


def main(argv: list[str] | None = None) -> None:
    """Print each way's median seconds per process count."""
    parser = argparse.ArgumentParser(prog="python -m perf.transport", description=__doc__)
    parser.add_argument("--procs", default="2,4", help="comma-separated process counts")
    parser.add_argument("--size", default="64MiB", help="bytes moved per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    print(f"{size / 2**20:.0f} MiB from rank 0 to every rank, {args.rounds} rounds, gloo; median s")
    for n in (int(p) for p in args.procs.split(",")):
        times = measure(n, size, args.rounds)
        print(f"  {n}p  broadcast: {times['broadcast']:.3f} s  |  shm: {times['shm']:.3f} s")


if __name__ == "__main__":
    main()
