"""Resharded loads: a checkpoint saved in one layout, loaded into another."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from perf._cases import load_benchmark
from perf._state import Checkpoints, Materials, Settings
from perf.workloads import RESHARD
from spec_tests.backends import Backend


@pytest.mark.parametrize("workload_name", RESHARD)
def test_reshard_load(
    benchmark: Any,
    backend: Backend,
    workload_name: str,
    settings: Settings,
    materials: Materials,
    checkpoints: Checkpoints,
    drop_caches: Callable[[], None],
) -> None:
    load_benchmark(
        benchmark,
        backend,
        workload_name,
        settings=settings,
        materials=materials,
        checkpoints=checkpoints,
        before_round=drop_caches,
    )
