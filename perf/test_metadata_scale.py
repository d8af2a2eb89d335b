"""Metadata scale: read_metadata and load planning of checkpoints with 1k, 10k and 100k chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from perf import _drive
from perf._state import Checkpoints, Settings
from perf.bench import Case, measure
from perf.workloads import METADATA, SIZES, WORKLOADS
from spec_tests.api import Backend


def _workload(name: str, settings: Settings) -> Any:
    workload = WORKLOADS[name]
    # Saving 100k chunks takes minutes with some backends: smoke runs keep to the smallest.
    if settings.size < SIZES["small"] and name != METADATA[0]:
        pytest.skip(f"{name} runs at --perf-size small and above")
    return workload


@pytest.mark.parametrize("workload_name", METADATA)
def test_read_metadata(
    benchmark: Any,
    backend: Backend,
    workload_name: str,
    settings: Settings,
    checkpoints: Checkpoints,
    drop_caches: Callable[[], None],
) -> None:
    workload = _workload(workload_name, settings)
    path = checkpoints.path(backend, workload)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        reader = backend.make_reader(path)
        reader.reset(path)
        drop_caches()
        return (reader,), {}

    def target(reader: Any) -> Any:
        return reader.read_metadata()

    case = Case("read_metadata", workload.name, backend.name, "backend", 0)
    metadata = measure(benchmark, case, target, setup, rounds=settings.rounds)
    assert len(metadata.state_dict_metadata) == len(workload.tensors(settings.size))


@pytest.mark.parametrize("workload_name", METADATA)
def test_plan_load(
    benchmark: Any,
    backend: Backend,
    workload_name: str,
    settings: Settings,
    checkpoints: Checkpoints,
) -> None:
    workload = _workload(workload_name, settings)
    path = checkpoints.path(backend, workload)
    specs = workload.tensors(settings.size)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        reader = backend.make_reader(path)
        reader.reset(path)
        state_dict = {s.name: torch.zeros(s.shape, dtype=s.dtype) for s in specs}
        return (reader, reader.read_metadata(), state_dict), {}

    case = Case("plan_load", workload.name, backend.name, "backend", 0)
    plan = measure(benchmark, case, _drive.plan_load, setup, rounds=settings.rounds)
    assert len(plan.items) == len(specs)
