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


def _set_up(calls: Calls, rank: int, name: str, fn: Callable[..., Any], *args: Any) -> None:
    # As torch: the keywords go only to a set-up whose signature takes **kwargs.
    if "kwargs" in inspect.signature(fn).parameters:
        calls.call(rank, name, fn, *args, rank=rank, use_collectives=True, **calls.extra)
    else:
        calls.call(rank, name, fn, *args)


def save(
    writers: Sequence[StorageWriter],
    path: str | None,
    planners: Sequence[SavePlanner],
    states: Sequence[dict[str, Any]] | None = None,
    calls: Calls = PLAIN,
) -> Saved:
    """Save through ``writers[r]`` with ``planners[r]`` over ``states[r]``; rank 0 coordinates.

    ``path`` None resets the writers without a checkpoint id, as ``dcp.save`` does when given
    a storage_writer and no checkpoint_id.
    """
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


def load(
    readers: Sequence[StorageReader],
    path: str,
    planners: Sequence[LoadPlanner],
    states: Sequence[dict[str, Any]] | None = None,
    calls: Calls = PLAIN,
) -> None:
    """Load through ``readers[r]`` into ``planners[r]`` over ``states[r]``; rank 0 coordinates."""
    n = len(readers)
    local = []
    for rank, (reader, planner) in enumerate(zip(readers, planners, strict=True)):
        calls.call(rank, "reset", reader.reset, path)
        metadata = calls.call(rank, "read_metadata", reader.read_metadata, **calls.extra)
        calls.returned("read_metadata", metadata, Metadata)
        state = {} if states is None else states[rank]
        planner.set_up_planner(state, metadata, rank == 0)
        _set_up(
            calls, rank, "set_up_storage_reader", reader.set_up_storage_reader, metadata, rank == 0
        )
        plan = calls.call(
            rank, "prepare_local_plan", reader.prepare_local_plan, planner.create_local_plan()
        )
        calls.returned("prepare_local_plan", plan, LoadPlan)
        local.append(plan)
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
