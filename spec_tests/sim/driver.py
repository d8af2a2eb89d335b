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

__all__ = ["Calls", "Saved", "load", "save"]


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


@dataclass(frozen=True, slots=True)
class Saved:
    """What a save handed the backend: the final plans, the results and the metadata."""

    metadata: Metadata
    plans: list[SavePlan]
    results: list[list[WriteResult]]


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
    n = len(writers)
    local = []
    for rank, (writer, planner) in enumerate(zip(writers, planners, strict=True)):
        calls.call(rank, "reset", writer.reset, *([] if path is None else [path]))
        meta = calls.call(rank, "storage_meta", writer.storage_meta)
        state = {} if states is None else states[rank]
        planner.set_up_planner(state, storage_meta=meta, is_coordinator=rank == 0)
        _set_up(calls, rank, "set_up_storage_writer", writer.set_up_storage_writer, rank == 0)
        plan = calls.call(
            rank, "prepare_local_plan", writer.prepare_local_plan, planner.create_local_plan()
        )
        calls.returned("prepare_local_plan", plan, SavePlan)
        local.append(plan)
    plans, metadata = planners[0].create_global_plan(local)
    plans = calls.call(0, "prepare_global_plan", writers[0].prepare_global_plan, plans)
    calls.returned("prepare_global_plan", plans, list, count=n)
    finals = [planner.finish_plan(plan) for planner, plan in zip(planners, plans, strict=True)]
    futures = [
        calls.call(rank, "write_data", writer.write_data, final, planner)
        for rank, (writer, planner, final) in enumerate(zip(writers, planners, finals, strict=True))
    ]
    results = [
        calls.wait_written(rank, final, future)
        for rank, (final, future) in enumerate(zip(finals, futures, strict=True))
    ]
    calls.call(0, "finish", writers[0].finish, metadata=metadata, results=results)
    return Saved(metadata, finals, results)


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
        calls.call(rank, "reset", writer.reset, *([] if path is None else [path]))
        meta = calls.call(rank, "storage_meta", writer.storage_meta)
        state = {} if states is None else states[rank]
        planner.set_up_planner(state, storage_meta=meta, is_coordinator=rank == 0)
        _set_up(
            calls,
            rank,
            "set_up_storage_writer",
            writer.set_up_storage_writer,
            rank == 0,
            collectives=False,
        )
        plan = calls.call(
            rank, "prepare_local_plan", writer.prepare_local_plan, planner.create_local_plan()
        )
        calls.returned("prepare_local_plan", plan, SavePlan)
        plans, metadata = planner.create_global_plan([plan])
        plans = calls.call(rank, "prepare_global_plan", writer.prepare_global_plan, plans)
        calls.returned("prepare_global_plan", plans, list, count=1)
        finals.append(planner.finish_plan(plans[0]))
        future = calls.call(rank, "write_data", writer.write_data, finals[-1], planner)
        results.append(calls.wait_written(rank, finals[-1], future))
        calls.call(rank, "finish", writer.finish, metadata=metadata, results=[results[-1]])
    assert metadata is not None  # at least one rank saved
    return Saved(metadata, finals, results)


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
    n = len(readers)
    local = []
    for rank, (reader, planner) in enumerate(zip(readers, planners, strict=True)):
        calls.call(rank, "reset", reader.reset, path)
        metadata = _read_metadata(calls, rank, reader, collectives)
        calls.returned("read_metadata", metadata, Metadata)
        state = {} if states is None else states[rank]
        planner.set_up_planner(state, metadata, rank == 0)
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
        local.append(plan)
    if not collectives:
        _read_alone(readers, planners, local, calls)
        return
    plans = calls.call(
        0,
        "prepare_global_plan",
        readers[0].prepare_global_plan,
        planners[0].create_global_plan(local),
    )
    calls.returned("prepare_global_plan", plans, list, count=n)
    finals = [planner.finish_plan(plan) for planner, plan in zip(planners, plans, strict=True)]
    futures = [
        calls.call(rank, "read_data", reader.read_data, final, planner)
        for rank, (reader, planner, final) in enumerate(zip(readers, planners, finals, strict=True))
    ]
    for rank, (final, planner, future) in enumerate(zip(finals, planners, futures, strict=True)):
        calls.wait_read(rank, final, planner, future)


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
