"""Real multi-process throughput: ``python -m perf.multiprocess [--procs 1,2] [--size 256MiB]``.

N real processes form one process group (gloo on CPU; nccl with one CUDA device per rank
when CUDA is available) and save, then load, the ``bf16x64`` workload as DTensors sharded
by rows over the N ranks, ranks in parallel, through ``dcp.save`` / ``dcp.load`` with each
backend in turn: every backend is measured in the same run, round after round. Rank 0 times
each save and each load between barriers (so the slowest rank sets the time; a CUDA load
ends with a device synchronize), and the aggregate throughput is the workload's bytes over
that time. Every load is checked bit for bit against the shard the rank saved. Printed:
medians in GB/s per backend and process count, and the scaling from 1 process to N.
The ranks run through :func:`spec_tests.ranks.spawn_ranks` (each reports before it ends).
"""

from __future__ import annotations

import argparse
import json
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

from perf.workloads import bf16x64_specs, make_tensors, parse_size
from spec_tests.backends import builtin, claims
from spec_tests.ranks import check_ranks, spawn_ranks

__all__ = ["BACKENDS", "measure", "rank_worker", "main"]

BACKENDS = ("dcp_impl-fs", "dcp_impl-hf", "torch-fs", "torch-hf")


def measure(
    procs: int, backends: Sequence[str], size: int, rounds: int, root: str
) -> dict[str, dict[str, list[float]]]:
    """Seconds per round, ``{backend: {"save": [...], "load": [...]}}``, with ``procs`` ranks."""
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
            timeout=3600.0,
            group="nccl" if cuda else "gloo",
        )
        check_ranks(outcomes)
        times: dict[str, dict[str, list[float]]] = json.loads(Path(out).read_text())
    return times


def rank_worker(
    rank: int, world: int, backends: list[str], size: int, rounds: int, root: str, out: str
) -> None:
    """One rank: shard the workload, save and load it with each backend ``rounds`` times."""
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
        backend = builtin(name)
        if world > 1 and not claims(backend, "multi-rank"):
            continue
        times[name] = {"save": [], "load": []}
        for r in range(rounds):
            path = f"{root}/{name}-{world}-{r}"
            writer, reader = backend.make_writer(path), backend.make_reader(path)
            times[name]["save"].append(_timed(dcp_save, state, storage_writer=writer))
            targets = {k: _zeros_like(v) for k, v in state.items()}
            times[name]["load"].append(_timed(dcp_load, targets, storage_reader=reader))
            for k, v in state.items():
                got = targets[k].to_local()
                assert torch.equal(got.view(torch.int16), v.to_local().view(torch.int16)), (
                    f"rank {rank}: {name} loaded {k} wrong"
                )
            dist.barrier()
            if rank == 0:
                shutil.rmtree(path, ignore_errors=True)
    if rank == 0:
        Path(out).write_text(json.dumps(times))


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


def _cell(
    results: dict[int, dict[str, dict[str, list[float]]]],
    first: int,
    n: int,
    name: str,
    op: str,
    size: int,
) -> str:
    """``2p: 1.23 GB/s (1.80x)``: throughput with ``n`` processes, scaling from ``first``."""
    if name not in results[n]:
        return f"{n}p: -"
    seconds = statistics.median(results[n][name][op])
    base = results[first].get(name)
    scaling = f" ({statistics.median(base[op]) / seconds:.2f}x)" if base else ""
    return f"{n}p: {size / seconds / 1e9:.2f} GB/s{scaling}"


def main(argv: list[str] | None = None) -> None:
    """Print aggregate GB/s per backend and process count, and the scaling from 1 process."""
    parser = argparse.ArgumentParser(prog="python -m perf.multiprocess", description=__doc__)
    parser.add_argument("--procs", default="1,2", help="comma-separated process counts")
    parser.add_argument("--size", default="256MiB", help="workload bytes, as --perf-size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--root", default=None, help="checkpoint folder (default: a temp dir)")
    args = parser.parse_args(argv)
    size, procs = parse_size(args.size), [int(p) for p in args.procs.split(",")]
    backends = args.backends.split(",")
    root = args.root or tempfile.mkdtemp(prefix="perf-mp-ckpt-")
    results = {n: measure(n, backends, size, args.rounds, root) for n in procs}
    device = "cuda/nccl" if torch.cuda.is_available() else "cpu/gloo"
    print(
        f"{size / 2**20:.0f} MiB bf16x64 row-sharded, {args.rounds} rounds, {device}; "
        "aggregate GB/s (median), x = scaling from the first process count"
    )
    for name in backends:
        for op in ("save", "load"):
            cells = [_cell(results, procs[0], n, name, op, size) for n in procs]
            print(f"  {name:12s} {op}: " + "  ".join(cells))
    if args.root is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
