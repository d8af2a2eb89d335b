"""Smoke check of the replicated-load run (perf/replicated.py): 2 ranks, 1 MiB, 1 round.

The measured run is the command line (perf/README.md, "Replicated loads (shared reads)").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch.distributed as dist

from dcp_impl.transfer import SHM_ROOT
from perf import replicated
from perf.workloads import MiB

pytestmark = [
    pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is unavailable"),
    pytest.mark.skipif(not os.path.isdir(SHM_ROOT), reason="no /dev/shm"),
]


def test_replicated_loads_run_with_sharing_off_and_on(tmp_path: Path) -> None:
    times = replicated.measure(2, MiB, 1, str(tmp_path), latency=0.001)
    assert sorted(times) == sorted(replicated.MODES)
    assert all(len(t) == 1 for t in times.values())
