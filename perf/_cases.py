"""Benchmark bodies shared by several test modules (plain functions the tests parametrize)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from perf import _drive
from perf._bench import Case, check_loaded, measure
from perf._state import Checkpoints, Materials, Settings, require
from perf.workloads import WORKLOADS, fresh_targets, nbytes
from spec_tests.backends import Backend

__all__ = ["load_benchmark"]


def load_benchmark(
    benchmark: Any,
    backend: Backend,
    workload_name: str,
    *,
    settings: Settings,
    materials: Materials,
    checkpoints: Checkpoints,
    before_round: Callable[[], None],
    device: str = "cpu",
) -> None:
    """Time loading ``workload_name`` with ``backend`` into fresh targets on ``device``."""
    workload = WORKLOADS[workload_name]
    require(backend, workload)
    path = checkpoints.path(backend, workload)
    specs = workload.tensors(settings.size)
    # Sizes only: the targets are made by each round's setup.
    moved = nbytes(fresh_targets(specs, workload.load, device="meta"))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        targets = fresh_targets(specs, workload.load, device)
        readers = [backend.make_reader(path) for _ in targets]
        before_round()
        return (readers, path, targets), {}

    def target(readers: Any, path: str, targets: Any) -> Any:
        _drive.load(readers, path, targets)
        return targets

    op = "gpu-load" if device != "cpu" else "load"
    case = Case(op, workload.name, backend.name, "backend", moved, device)
    loaded = measure(benchmark, case, target, setup, rounds=settings.rounds)
    check_loaded(materials.tensors(workload), loaded)
