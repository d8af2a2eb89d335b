"""Save planning at 1 000 ranks, with collectives and without (``use_collectives=False``).

``sharded10k`` (10 tensors of 1 000 rows, one row per rank over 1 000 simulated ranks): every
rank's writer is set up and has made its local plan before the timed call, which is the global
planning only. With collectives (op ``plan_save``) the coordinator plans all 1 000 local plans
at once, as ``dcp.save`` does between its gather and scatter (the messages themselves are not
timed: there are none in one process); without (``plan_save-alone``) each rank plans its own,
and the figure is the sum over the ranks, of which each rank spends 1/1 000 in parallel.
"""

from __future__ import annotations

from typing import Any

import pytest

from perf import _drive
from perf._state import Settings
from perf.bench import Case, measure
from perf.workloads import WORKLOADS, make_tensors, split
from spec_tests.api import Backend

_WORKLOAD = "sharded10k"


@pytest.mark.parametrize("collectives", [True, False], ids=["collectives", "alone"])
def test_plan_save(
    benchmark: Any, backend: Backend, settings: Settings, tmp_path: Any, collectives: bool
) -> None:
    workload = WORKLOADS[_WORKLOAD]
    ranks = split(make_tensors(workload.tensors(settings.size)), workload.save, save=True)
    writers = [backend.make_writer(str(tmp_path)) for _ in ranks]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        planners, plans = _drive.local_save_plans(
            writers, str(tmp_path), ranks, collectives=collectives
        )
        return (writers, planners, plans), {"collectives": collectives}

    op = "plan_save" if collectives else "plan_save-alone"
    case = Case(op, workload.name, backend.name, "backend", 0)
    count = measure(benchmark, case, _drive.plan_save, setup, rounds=settings.rounds)
    assert count == len(ranks)
