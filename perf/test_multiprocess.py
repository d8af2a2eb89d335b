"""Smoke check of the multi-process throughput run (perf/multiprocess.py): 2 ranks, 1 round.

The measured run is the command line (its figures are medians of rounds timed inside the
ranks, which pytest-benchmark cannot time from outside); perf/README.md has the command.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from perf import multiprocess
from perf.workloads import MiB

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is unavailable")


def test_every_backend_saves_and_loads_from_two_processes(tmp_path: Path) -> None:
    if torch.cuda.is_available() and torch.cuda.device_count() < 2:
        pytest.skip("2 ranks on CUDA need 2 devices")
    times = multiprocess.measure(2, multiprocess.BACKENDS, MiB, 1, str(tmp_path))
    assert sorted(times) == sorted(multiprocess.BACKENDS)  # each claims multi-rank
    assert all(len(t["save"]) == len(t["load"]) == 1 for t in times.values())
