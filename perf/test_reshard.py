"""Resharded loads: a checkpoint saved in one layout, loaded into another."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from perf.workloads import RESHARD


@pytest.mark.parametrize("workload_name", RESHARD)
def test_reshard_load(load_bench: Callable[[str], None], workload_name: str) -> None:
    load_bench(workload_name)
