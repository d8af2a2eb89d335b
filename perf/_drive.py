"""Drive simulated ranks through a backend in DCP's call order, with minimal planners.

The call sequence is :mod:`spec_tests.sim.driver`'s, with plain (unchecked) calls: one process
plays every rank in turn, one writer/reader instance per rank, so that an 8-rank save is
benchmarked without 8 processes. The planners only map write/read items to the ranks'
tensors (built with torch's planner helpers), so nearly all the time measured is the backend's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint.default_planner import (
    DefaultLoadPlanner,
    create_default_global_save_plan,
)
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    TensorWriteData,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter

from dcp_impl.errors import UnsupportedError
from perf.workloads import Piece
from spec_tests.sim import driver

__all__ = ["load", "local_save_plans", "plan_load", "plan_save", "save"]


def _chunk(piece: Piece) -> ChunkStorageMetadata:
    return ChunkStorageMetadata(torch.Size(piece.box.offsets), torch.Size(piece.box.sizes))


class _SavePlanner(SavePlanner):
    """Hands out one rank's pieces; global planning is torch's default."""

    def __init__(self, pieces: Sequence[Piece]) -> None:
        self._pieces = {(p.fqn, p.box.offsets): p for p in pieces}

    def set_up_planner(self, *args: Any, **kwargs: Any) -> None:
        pass  # the pieces were given to __init__

    def create_local_plan(self) -> SavePlan:
        return SavePlan([self._item(p) for p in self._pieces.values()])

    @staticmethod
    def _item(piece: Piece) -> WriteItem:
        chunk = _chunk(piece)
        return WriteItem(
            index=MetadataIndex(piece.fqn, chunk.offsets),
            type=WriteItemType.SHARD,
            tensor_data=TensorWriteData(
                chunk=chunk,
                properties=TensorProperties.create_from_tensor(piece.tensor),
                size=torch.Size(piece.shape),
            ),
        )

    def create_global_plan(self, all_plans: list[SavePlan]) -> tuple[list[SavePlan], Metadata]:
        return create_default_global_save_plan(all_plans)

    def finish_plan(self, new_plan: SavePlan) -> SavePlan:
        return new_plan

    def resolve_data(self, write_item: WriteItem) -> torch.Tensor:
        return self._pieces[write_item.index.fqn, tuple(write_item.index.offset or ())].tensor


class _LoadPlanner(LoadPlanner):
    """Reads one rank's pieces in place, resharding with torch's chunk-list helper."""

    def __init__(self, pieces: Sequence[Piece]) -> None:
        self._by_fqn: dict[str, list[Piece]] = {}
        for piece in pieces:
            self._by_fqn.setdefault(piece.fqn, []).append(piece)
        self._metadata: Metadata | None = None

    def set_up_planner(
        self, state_dict: Any, metadata: Metadata | None = None, is_coordinator: bool = False
    ) -> None:
        self._metadata = metadata

    def create_local_plan(self) -> LoadPlan:
        assert self._metadata is not None, "set_up_planner runs first"
        items: list[ReadItem] = []
        for fqn, pieces in self._by_fqn.items():
            stored = self._metadata.state_dict_metadata[fqn]
            if not isinstance(stored, TensorStorageMetadata):
                raise UnsupportedError(f"checkpoint entry {fqn}: expected a tensor, found {stored}")
            items += create_read_items_for_chunk_list(fqn, stored, [_chunk(p) for p in pieces])
        return LoadPlan(items)

    def create_global_plan(self, global_plan: list[LoadPlan]) -> list[LoadPlan]:
        return global_plan

    def finish_plan(self, central_plan: LoadPlan) -> LoadPlan:
        return central_plan

    def load_bytes(self, read_item: ReadItem, value: Any) -> None:
        raise UnsupportedError(f"{read_item.dest_index.fqn}: workloads hold tensors only")

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        index = read_item.dest_index
        assert index.index is not None, "create_read_items_for_chunk_list sets the chunk index"
        target = self._by_fqn[index.fqn][index.index].tensor
        return narrow_tensor_by_index(target, read_item.dest_offsets, read_item.lengths)

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        pass  # resolve_tensor handed out a view of the target: the data is in place


def save(writers: Sequence[StorageWriter], path: str, ranks: Sequence[Sequence[Piece]]) -> None:
    """Save ``ranks[r]`` through ``writers[r]`` (one per rank, rank 0 coordinates) to ``path``."""
    driver.save(writers, path, [_SavePlanner(pieces) for pieces in ranks])


def load(readers: Sequence[StorageReader], path: str, ranks: Sequence[Sequence[Piece]]) -> None:
    """Load into the tensors of ``ranks[r]`` through ``readers[r]`` (one per rank) from ``path``."""
    driver.load(readers, path, [_LoadPlanner(pieces) for pieces in ranks])


def plan_load(reader: StorageReader, metadata: Metadata, state_dict: dict[str, Any]) -> LoadPlan:
    """One rank's load planning as dcp.load does it, with torch's DefaultLoadPlanner."""
    planner = DefaultLoadPlanner()
    planner.set_up_planner(state_dict, metadata, True)
    reader.set_up_storage_reader(metadata, True, rank=0, use_collectives=True)
    local = reader.prepare_local_plan(planner.create_local_plan())
    (plan,) = reader.prepare_global_plan(planner.create_global_plan([local]))
    return planner.finish_plan(plan)


def local_save_plans(
    writers: Sequence[StorageWriter], ranks: Sequence[Sequence[Piece]], *, collectives: bool
) -> tuple[list[SavePlanner], list[SavePlan]]:
    """Every rank's planner and local save plan, as each rank makes them before any exchange."""
    planners: list[SavePlanner] = [_SavePlanner(pieces) for pieces in ranks]
    plans = []
    for rank, (writer, planner) in enumerate(zip(writers, planners, strict=True)):
        writer.set_up_storage_writer(rank == 0, rank=rank, use_collectives=collectives)
        plans.append(writer.prepare_local_plan(planner.create_local_plan()))
    return planners, plans


def plan_save(
    writers: Sequence[StorageWriter],
    planners: Sequence[SavePlanner],
    plans: Sequence[SavePlan],
    *,
    collectives: bool,
) -> int:
    """The global save planning of every rank; the number of final plans.

    With collectives the coordinator plans for all ranks (what it does between the gather
    and the scatter, whose messages a simulation cannot time); without, each rank plans its
    own plan alone, and the time is the sum over ranks (each rank's share is 1/N of it).
    """
    if collectives:
        final, _ = planners[0].create_global_plan(list(plans))
        return len(writers[0].prepare_global_plan(final))
    count = 0
    for writer, planner, plan in zip(writers, planners, plans, strict=True):
        final, _ = planner.create_global_plan([plan])
        count += len(writer.prepare_global_plan(final))
    return count
