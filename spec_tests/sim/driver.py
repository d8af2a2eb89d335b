"""DCP's storage call sequence, written once: what ``dcp.save`` and ``dcp.load`` do to a backend.

One writer (reader) per rank, called in the order of torch's ``state_dict_saver`` and
``state_dict_loader`` (the numbered sequence of ``torch.distributed.checkpoint.storage``):

save: 1. ``reset(checkpoint_id)``; 2. ``storage_meta()``; 3. ``set_up_storage_writer(
is_coordinator, rank=, use_collectives=)`` (keywords only where its signature takes
``**kwargs``, as torch checks); 4. ``prepare_local_plan``; 5. on the coordinator, the
planner's global plan, then ``prepare_global_plan``; 6. ``write_data`` on every rank, whose
futures give ``list[WriteResult]``; 7. on the coordinator, ``finish(metadata, results)``.

load: 1. ``reset``; 2. ``read_metadata()``; 3. ``set_up_storage_reader(metadata,
is_coordinator, ...)``; 4. ``prepare_local_plan``; 5. coordinator ``prepare_global_plan``;
6. ``read_data`` on every rank, then wait for every future.

Collective-free (``use_collectives=False``): no rank waits for another. Each rank plans alone
(its planner's and its writer's global planning over its own plan only), writes, and calls
``finish`` with its own metadata and results; a load reads ``read_metadata(rank=r)`` and
plans alone in the same way. torch passes ``rank=`` only to methods taking ``**kwargs``.

One process plays every rank in turn. :class:`Calls` decides how each call is made: plainly
(perf times the backend and nothing else) or checked (the conformance harness subclasses it
to label calls, enforce the contract and bound the waits). A torch upgrade that changes the
sequence is made here, once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult

__all__ = [
    "Calls",
    "Saved",
    "load",
    "plan_global_load",
    "plan_global_save",
    "plan_local_load",
    "plan_local_save",
    "plan_save_alone",
    "save",
]


class Calls:
    """How the driver calls a backend: plainly. Override to label, check or time the calls."""

    #: Extra keywords for the methods whose abstract signature takes ``**kwargs``.
    extra: Mapping[str, Any] = {}

    def call(self, rank: int, name: str, fn: Callable[..., Any], /, *args: Any, **kw: Any) -> Any:
        """Call ``fn`` (the backend method ``name`` of ``rank``)."""
        return fn(*args, **kw)

    def returned(self, name: str, value: object, kind: type, count: int | None = None) -> None:
        """Check that a call returned a ``kind`` (of ``count`` items); plainly, nothing."""

    def wait_written(self, rank: int, plan: SavePlan, future: Any) -> list[WriteResult]:
        """Wait for ``rank``'s ``write_data`` future; return its results."""
        results: list[WriteResult] = future.wait()
        return results

    def wait_read(self, rank: int, plan: LoadPlan, planner: LoadPlanner, future: Any) -> None:
        """Wait for ``rank``'s ``read_data`` future."""
        future.wait()


PLAIN = Calls()


@dataclass(frozen=True, slots=True, eq=False)
class Saved:
    """What a save handed the backend: the final plans, the results and the metadata.

    The metadata and results are what ``finish`` was given (collective-free: the last
    rank's metadata; each rank's went to its own ``finish``).
    """

    metadata: Metadata
    plans: tuple[SavePlan, ...]
    results: tuple[tuple[WriteResult, ...], ...]

    @classmethod
    def of(
        cls, metadata: Metadata, plans: Sequence[SavePlan], results: Sequence[Sequence[WriteResult]]
    ) -> Saved:
        """A record of ``plans`` and ``results`` as made (copied into tuples)."""
        return cls(metadata, tuple(plans), tuple(tuple(r) for r in results))


def _set_up(
    calls: Calls,
    rank: int,
    name: str,
    fn: Callable[..., Any],
    *args: Any,
    collectives: bool = True,
) -> None:
    # As torch: the keywords go only to a set-up whose signature takes **kwargs.
    if "kwargs" in inspect.signature(fn).parameters:
        calls.call(rank, name, fn, *args, rank=rank, use_collectives=collectives, **calls.extra)
    else:
        calls.call(rank, name, fn, *args)


def _read_metadata(calls: Calls, rank: int, reader: StorageReader, collectives: bool) -> Any:
    if collectives or "kwargs" not in inspect.signature(reader.read_metadata).parameters:
        return calls.call(rank, "read_metadata", reader.read_metadata, **calls.extra)
    return calls.call(rank, "read_metadata", reader.read_metadata, rank=rank, **calls.extra)


def save(
    writers: Sequence[StorageWriter],
    path: str | None,
    planners: Sequence[SavePlanner],
    states: Sequence[dict[str, Any]] | None = None,
    calls: Calls = PLAIN,
    *,
    collectives: bool = True,
) -> Saved:
    """Save through ``writers[r]`` with ``planners[r]`` over ``states[r]``; rank 0 coordinates.

    ``path`` None resets the writers without a checkpoint id, as ``dcp.save`` does when given
    a storage_writer and no checkpoint_id. ``collectives=False`` saves as
    ``dcp.save(..., use_collectives=False)``: each rank alone, rank after rank; the returned
    metadata is the last rank's (each rank's went to its own ``finish``).
    """
    if not collectives:
        return _save_alone(writers, path, planners, states, calls)
    local = [
        plan_local_save(writer, planner, rank, path, _state(states, rank), calls)
        for rank, (writer, planner) in enumerate(zip(writers, planners, strict=True))
    ]
    finals, metadata = plan_global_save(writers, planners, local, calls)
    futures = [
        calls.call(rank, "write_data", writer.write_data, final, planner)
        for rank, (writer, planner, final) in enumerate(zip(writers, planners, finals, strict=True))
    ]
    results = [
        calls.wait_written(rank, final, future)
        for rank, (final, future) in enumerate(zip(finals, futures, strict=True))
    ]
    calls.call(0, "finish", writers[0].finish, metadata=metadata, results=results)
    return Saved.of(metadata, finals, results)


def plan_local_save(
    writer: StorageWriter,
    planner: SavePlanner,
    rank: int,
    path: str | None,
    state: dict[str, Any] | None = None,
    calls: Calls = PLAIN,
    *,
    collectives: bool = True,
) -> SavePlan:
    """Save steps 1-4 of one rank: reset, storage_meta, set-up, its local plan."""
    calls.call(rank, "reset", writer.reset, *([] if path is None else [path]))
    meta = calls.call(rank, "storage_meta", writer.storage_meta)
    planner.set_up_planner(
        {} if state is None else state, storage_meta=meta, is_coordinator=rank == 0
    )
    _set_up(
        calls,
        rank,
        "set_up_storage_writer",
        writer.set_up_storage_writer,
        rank == 0,
        collectives=collectives,
    )
    plan = calls.call(
        rank, "prepare_local_plan", writer.prepare_local_plan, planner.create_local_plan()
    )
    calls.returned("prepare_local_plan", plan, SavePlan)
    return plan


def plan_global_save(
    writers: Sequence[StorageWriter],
    planners: Sequence[SavePlanner],
    local: Sequence[SavePlan],
    calls: Calls = PLAIN,
) -> tuple[list[SavePlan], Metadata]:
    """Save step 5: the coordinator's global plan over every local plan, each rank's final plan."""
    plans, metadata = planners[0].create_global_plan(list(local))
    plans = calls.call(0, "prepare_global_plan", writers[0].prepare_global_plan, plans)
    calls.returned("prepare_global_plan", plans, list, count=len(writers))
    finals = [planner.finish_plan(plan) for planner, plan in zip(planners, plans, strict=True)]
    return finals, metadata


def plan_save_alone(
    writer: StorageWriter, planner: SavePlanner, rank: int, plan: SavePlan, calls: Calls = PLAIN
) -> tuple[SavePlan, Metadata]:
    """Save step 5 of a collective-free rank: global planning over its own plan alone."""
    plans, metadata = planner.create_global_plan([plan])
    plans = calls.call(rank, "prepare_global_plan", writer.prepare_global_plan, plans)
    calls.returned("prepare_global_plan", plans, list, count=1)
    return planner.finish_plan(plans[0]), metadata


def _state(states: Sequence[dict[str, Any]] | None, rank: int) -> dict[str, Any]:
    return {} if states is None else states[rank]


def _save_alone(
    writers: Sequence[StorageWriter],
    path: str | None,
    planners: Sequence[SavePlanner],
    states: Sequence[dict[str, Any]] | None,
    calls: Calls,
) -> Saved:
    finals, results = [], []
    metadata = None
    for rank, (writer, planner) in enumerate(zip(writers, planners, strict=True)):
        state = _state(states, rank)
        plan = plan_local_save(writer, planner, rank, path, state, calls, collectives=False)
        final, metadata = plan_save_alone(writer, planner, rank, plan, calls)
        finals.append(final)
        future = calls.call(rank, "write_data", writer.write_data, final, planner)
        results.append(calls.wait_written(rank, final, future))
        calls.call(rank, "finish", writer.finish, metadata=metadata, results=[results[-1]])
    assert metadata is not None  # at least one rank saved
    return Saved.of(metadata, finals, results)


def load(
    readers: Sequence[StorageReader],
    path: str,
    planners: Sequence[LoadPlanner],
    states: Sequence[dict[str, Any]] | None = None,
    calls: Calls = PLAIN,
    *,
    collectives: bool = True,
) -> None:
    """Load through ``readers[r]`` into ``planners[r]`` over ``states[r]``; rank 0 coordinates.

    ``collectives=False`` loads as ``dcp.load`` does a rank-local checkpoint: each rank reads
    ``read_metadata(rank=r)`` and plans alone.
    """
    local = []
    for rank, (reader, planner) in enumerate(zip(readers, planners, strict=True)):
        calls.call(rank, "reset", reader.reset, path)
        metadata = _read_metadata(calls, rank, reader, collectives)
        calls.returned("read_metadata", metadata, Metadata)
        state = _state(states, rank)
        local.append(
            plan_local_load(reader, planner, rank, metadata, state, calls, collectives=collectives)
        )
    if not collectives:
        _read_alone(readers, planners, local, calls)
        return
    finals = plan_global_load(readers, planners, local, calls)
    futures = [
        calls.call(rank, "read_data", reader.read_data, final, planner)
        for rank, (reader, planner, final) in enumerate(zip(readers, planners, finals, strict=True))
    ]
    for rank, (final, planner, future) in enumerate(zip(finals, planners, futures, strict=True)):
        calls.wait_read(rank, final, planner, future)


def plan_local_load(
    reader: StorageReader,
    planner: LoadPlanner,
    rank: int,
    metadata: Metadata,
    state: dict[str, Any] | None = None,
    calls: Calls = PLAIN,
    *,
    collectives: bool = True,
) -> LoadPlan:
    """Load steps 3-4 of one rank given its metadata (collective-free: step 5 too, alone)."""
    planner.set_up_planner({} if state is None else state, metadata, rank == 0)
    _set_up(
        calls,
        rank,
        "set_up_storage_reader",
        reader.set_up_storage_reader,
        metadata,
        rank == 0,
        collectives=collectives,
    )
    plan = calls.call(
        rank, "prepare_local_plan", reader.prepare_local_plan, planner.create_local_plan()
    )
    calls.returned("prepare_local_plan", plan, LoadPlan)
    if not collectives:
        plan = planner.create_global_plan([plan])[0]
        plan = calls.call(rank, "prepare_global_plan", reader.prepare_global_plan, [plan])
        calls.returned("prepare_global_plan", plan, list, count=1)
        plan = plan[0]
    return plan


def plan_global_load(
    readers: Sequence[StorageReader],
    planners: Sequence[LoadPlanner],
    local: Sequence[LoadPlan],
    calls: Calls = PLAIN,
) -> list[LoadPlan]:
    """Load step 5: the coordinator's global plan over every local plan, each rank's final plan."""
    plans = calls.call(
        0,
        "prepare_global_plan",
        readers[0].prepare_global_plan,
        planners[0].create_global_plan(list(local)),
    )
    calls.returned("prepare_global_plan", plans, list, count=len(readers))
    return [planner.finish_plan(plan) for planner, plan in zip(planners, plans, strict=True)]


def _read_alone(
    readers: Sequence[StorageReader],
    planners: Sequence[LoadPlanner],
    plans: Sequence[LoadPlan],
    calls: Calls,
) -> None:
    for rank, (reader, planner, plan) in enumerate(zip(readers, planners, plans, strict=True)):
        final = planner.finish_plan(plan)
        future = calls.call(rank, "read_data", reader.read_data, final, planner)
        calls.wait_read(rank, final, planner, future)
