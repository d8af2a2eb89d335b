"""Multi-process scaling: saves and loads of ``bf16x64`` by N real processes (gloo on CPU),
one benchmark per (operation, backend, N), for perf/report.py's scaling table and the gate.

All backends of one N run in one group of spawned ranks (perf/multiprocess.py), each rank on
its share of the CPU cores; rank 0 times every round between barriers, and those times are
the benchmark's rounds (``perf.bench.record``): pytest-benchmark cannot time N processes
from outside. Every load is checked bit for bit inside the ranks. N is ``--perf-procs``
(1,2,4; 1,2 in the smoke run with ``--benchmark-disable``, which times one round).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist

from perf import multiprocess
from perf._state import Settings
from perf.bench import Case, record
from perf.workloads import bf16x64_specs
from spec_tests.api import Backend

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is unavailable")

Times = dict[str, dict[str, list[float]]]


@pytest.fixture(scope="module")
def multiprocess_times(
    pytestconfig: pytest.Config,
    settings: Settings,
    backend_specs: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[int], Times]:
    """``times(N)``: every backend's seconds per round with N ranks, measured once per N."""
    cache: dict[int, Times] = {}
    timed = not pytestconfig.getoption("benchmark_disable")

    def times(procs: int) -> Times:
        if procs not in cache:
            root = str(tmp_path_factory.mktemp(f"mp{procs}"))
            rounds = settings.rounds if timed else 1
            cache[procs] = multiprocess.measure(
                procs, backend_specs, settings.size, rounds, root, warmup=timed
            )
        return cache[procs]

    return times


@pytest.mark.parametrize("op", ["save", "load"])
def test_multiprocess(
    benchmark: Any,
    backend: Backend,
    backend_spec: str,
    procs: int,
    op: str,
    settings: Settings,
    multiprocess_times: Callable[[int], Times],
) -> None:
    cuda = torch.cuda.is_available()
    if cuda and torch.cuda.device_count() < procs:
        pytest.skip(f"{procs} ranks on CUDA need {procs} devices")
    times = multiprocess_times(procs).get(backend_spec)
    if times is None:
        pytest.skip(f"backend {backend.name!r} does not claim multi-rank: not run on {procs}")
    moved = sum(spec.nbytes for spec in bf16x64_specs(settings.size))
    device = "cuda" if cuda else "cpu"
    case = Case(f"mp-{op}", multiprocess.WORKLOAD, backend.name, "backend", moved, device, procs)
    record(benchmark, case, times[op])
