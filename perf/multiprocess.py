"""Real multi-process throughput: ``python -m perf.multiprocess [--procs 1,2,4] [--size 256MiB]``.

N real processes form one process group (gloo on CPU; nccl with one CUDA device per rank
when CUDA is available) and save, then load, the ``bf16x64`` workload as DTensors sharded
by rows over the N ranks, ranks in parallel, through ``dcp.save`` / ``dcp.load`` with each
backend in turn: every backend is measured in the same run, round after round, after one
untimed round each. Rank 0 times each save and each load between barriers (so the slowest
rank sets the time; a CUDA load ends with a device synchronize), and the aggregate
throughput is the workload's bytes over that time. Every load is checked bit for bit
against the shard the rank saved. Each rank runs torch on its share of the CPU cores
(``cpu_count // N``, at least one thread), and the backends on their own default threads.

The benchmarks (perf/test_multiprocess.py) store these times as pytest-benchmark rounds
(``mp-save`` / ``mp-load``, one benchmark per backend and N) for perf/report.py and the gate;
this command prints the same table without pytest. The ranks run through
:func:`spec_tests.sim.ranks.spawn_ranks` (each reports before it ends).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from perf._rows import Row
from perf.scaling import format_scaling
from perf.workloads import bf16x64_specs, make_tensors, parse_size
from spec_tests.api import check_ranks, claims, load_backend, spawn_ranks

__all__ = ["BACKENDS", "WORKLOAD", "measure", "rank_worker", "rows", "main"]

BACKENDS = ("dcp_impl-fs", "dcp_impl-hf", "torch-fs", "torch-hf")
#: The workload's name in the benchmarks' labels: bf16x64 as DTensors sharded by rows.
WORKLOAD = "bf16x64-rows"


def measure(
    procs: int,
    backends: Sequence[str],
    size: int,
    rounds: int,
    root: str,
    *,
    warmup: bool = True,
) -> dict[str, dict[str, list[float]]]:
    """Seconds per round, ``{spec: {"save": [...], "load": [...]}}``, with ``procs`` ranks;
    ``backends`` are backend specs (``spec_tests.backends.load_backend``). A backend that does
    not claim multi-rank is left out where ``procs > 1``. ``warmup``: one untimed round first."""
    cuda = torch.cuda.is_available()
    if cuda and torch.cuda.device_count() < procs:
        raise ValueError(
            f"{procs} ranks need {procs} CUDA devices, found {torch.cuda.device_count()}"
        )
    with tempfile.TemporaryDirectory(prefix="perf-mp-") as scratch:
        out = str(Path(scratch) / "times.json")
        outcomes = spawn_ranks(
            rank_worker,
            procs,
            list(backends),
            size,
            rounds,
            root,
            out,
            warmup,
            timeout=3600.0,
            group="nccl" if cuda else "gloo",
        )
        check_ranks(outcomes)
        times: dict[str, dict[str, list[float]]] = json.loads(Path(out).read_text())
    return times


def rank_worker(
    rank: int,
    world: int,
    backends: list[str],
    size: int,
    rounds: int,
    root: str,
    out: str,
    warmup: bool = True,
) -> None:
    """One rank: shard the workload, save and load it with each backend ``rounds`` times."""
    # spawn_ranks starts every rank on one thread; a measurement gives each its share.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(rank)
    mesh = init_device_mesh("cuda" if cuda else "cpu", (world,))
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    full = make_tensors(bf16x64_specs(size))
    state = {k: distribute_tensor(v.to(device), mesh, [Shard(0)]) for k, v in full.items()}
    del full
    times: dict[str, dict[str, list[float]]] = {}
    for name in backends:
        backend = load_backend(name)
        if world > 1 and not claims(backend, "multi-rank"):
            continue
        times[name] = {"save": [], "load": []}
        for r in range(-1 if warmup else 0, rounds):
            save, load = _round(backend, state, f"{root}/{backend.name}-{world}-{r + 1}")
            if r >= 0:  # round -1 is the untimed one
                times[name]["save"].append(save)
                times[name]["load"].append(load)
    if rank == 0:
        Path(out).write_text(json.dumps(times))


def _round(backend: Any, state: dict[str, DTensor], path: str) -> tuple[float, float]:
    """Save ``state`` to ``path`` and load it back, checked; the seconds of each."""
    writer, reader = backend.make_writer(path), backend.make_reader(path)
    save = _timed(dcp_save, state, storage_writer=writer)
    targets = {k: _zeros_like(v) for k, v in state.items()}
    load = _timed(dcp_load, targets, storage_reader=reader)
    for k, v in state.items():
        got = targets[k].to_local()
        assert torch.equal(got.view(torch.int16), v.to_local().view(torch.int16)), (
            f"rank {dist.get_rank()}: {backend.name} loaded {k} wrong"
        )
    dist.barrier()
    if dist.get_rank() == 0:
        shutil.rmtree(path, ignore_errors=True)
    return save, load


def _zeros_like(value: DTensor) -> DTensor:
    return DTensor.from_local(
        torch.zeros_like(value.to_local()),
        value.device_mesh,
        value.placements,
        shape=value.shape,
        stride=value.stride(),
    )


def _timed(call: Callable[..., object], *args: Any, **kwargs: Any) -> float:
    dist.barrier()
    start = time.perf_counter()
    call(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dist.barrier()
    return time.perf_counter() - start


def rows(
    results: dict[int, dict[str, dict[str, list[float]]]], size: int, device: str
) -> list[Row]:
    """The medians of :func:`measure`'s times per process count, as perf/report.py's rows."""
    out = []
    for procs, times in results.items():
        for name, ops in times.items():
            for op, seconds in ops.items():
                median = statistics.median(seconds)
                key = f"mp-{op}[{name}-{procs}]"
                out.append(
                    Row(key, f"mp-{op}", WORKLOAD, name, "backend", size, device, median, procs)
                )
    return out


def main(argv: list[str] | None = None) -> None:
    """Print aggregate GB/s per backend and process count, and the scaling efficiency."""
    parser = argparse.ArgumentParser(prog="python -m perf.multiprocess", description=__doc__)
    parser.add_argument("--procs", default="1,2,4", help="comma-separated process counts")
    parser.add_argument("--size", default="256MiB", help="workload bytes, as --perf-size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--root", default=None, help="checkpoint folder (default: a temp dir)")
    args = parser.parse_args(argv)
    size, procs = parse_size(args.size), [int(p) for p in args.procs.split(",")]
    backends = args.backends.split(",")
    root = args.root or tempfile.mkdtemp(prefix="perf-mp-ckpt-")
    try:
        results = {n: measure(n, backends, size, args.rounds, root) for n in procs}
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"{size / 2**20:.0f} MiB bf16x64 row-sharded, {args.rounds} rounds, {device}; "
        "aggregate GB/s (median), (eff.) = GB/s / (procs x GB/s at 1 process)"
    )
    moved = sum(spec.nbytes for spec in bf16x64_specs(size))  # size, rounded to whole rows
    print(format_scaling(rows(results, moved, device)))


if __name__ == "__main__":
    main()
