"""Drive simulated ranks through a backend in DCP's call order, with minimal planners.

The call sequence is :mod:`spec_tests.sim.driver`'s (through :mod:`spec_tests.api`), with plain
(unchecked) calls: one process plays every rank in turn, one writer/reader instance per rank,
so that an 8-rank save is benchmarked without 8 processes. The planners
(:class:`~spec_tests.api.PieceSavePlanner`, :class:`~spec_tests.api.PieceLoadPlanner`) only
map write/read items to the ranks' tensors, so nearly all the time measured is the backend's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import LoadPlan, SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter

from spec_tests.api import Piece, PieceLoadPlanner, PieceSavePlanner, driver

__all__ = ["load", "local_save_plans", "plan_load", "plan_save", "save"]


def save(writers: Sequence[StorageWriter], path: str, ranks: Sequence[Sequence[Piece]]) -> None:
    """Save ``ranks[r]`` through ``writers[r]`` (one per rank, rank 0 coordinates) to ``path``."""
    driver.save(writers, path, [PieceSavePlanner(pieces) for pieces in ranks])


def load(readers: Sequence[StorageReader], path: str, ranks: Sequence[Sequence[Piece]]) -> None:
    """Load into the tensors of ``ranks[r]`` through ``readers[r]`` (one per rank) from ``path``."""
    driver.load(readers, path, [PieceLoadPlanner(pieces) for pieces in ranks])


def plan_load(reader: StorageReader, metadata: Metadata, state_dict: dict[str, Any]) -> LoadPlan:
    """One rank's load planning (load steps 3-5) as dcp.load does it, with DefaultLoadPlanner."""
    planner = DefaultLoadPlanner()
    local = driver.plan_local_load(reader, planner, 0, metadata, state_dict)
    (final,) = driver.plan_global_load([reader], [planner], [local])
    return final


def local_save_plans(
    writers: Sequence[StorageWriter],
    path: str,
    ranks: Sequence[Sequence[Piece]],
    *,
    collectives: bool,
) -> tuple[list[SavePlanner], list[SavePlan]]:
    """Every rank's planner and local save plan (save steps 1-4), before any exchange."""
    planners: list[SavePlanner] = [PieceSavePlanner(pieces) for pieces in ranks]
    plans = [
        driver.plan_local_save(writer, planner, rank, path, collectives=collectives)
        for rank, (writer, planner) in enumerate(zip(writers, planners, strict=True))
    ]
    return planners, plans


def plan_save(
    writers: Sequence[StorageWriter],
    planners: Sequence[SavePlanner],
    plans: Sequence[SavePlan],
    *,
    collectives: bool,
) -> int:
    """The global save planning (save step 5) of every rank; the number of final plans.

    With collectives the coordinator plans for all ranks (what it does between the gather
    and the scatter, whose messages a simulation cannot time); without, each rank plans its
    own plan alone, and the time is the sum over ranks (each rank's share is 1/N of it).
    """
    if collectives:
        finals, _ = driver.plan_global_save(writers, planners, plans)
        return len(finals)
    alone = [
        driver.plan_save_alone(writer, planner, rank, plan)
        for rank, (writer, planner, plan) in enumerate(zip(writers, planners, plans, strict=True))
    ]
    return len(alone)
