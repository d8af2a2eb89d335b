"""Plain planners over given pieces: each rank saves, or loads into, tensors it was handed.

No draws and no checks: the planners only map write/read items to the ranks' tensors (built
with torch's planner helpers), so nearly all the time a driven save or load takes is the
backend's. perf times saves and loads through them (with :mod:`spec_tests.sim.driver`'s plain
calls); a test that measures one load uses them as they are. The checked counterparts, over
drawn state dicts, are :mod:`spec_tests.sim.harness.planners`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint.default_planner import create_default_global_save_plan
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

from dcp_impl.errors import UnsupportedError
from dcp_impl.layout import Box

__all__ = ["Piece", "PieceLoadPlanner", "PieceSavePlanner"]


@dataclass(frozen=True, slots=True)
class Piece:
    """The part ``box`` of tensor ``fqn`` (global shape ``shape``) that one rank holds."""

    fqn: str
    shape: tuple[int, ...]
    box: Box
    tensor: torch.Tensor


def _chunk(piece: Piece) -> ChunkStorageMetadata:
    return ChunkStorageMetadata(torch.Size(piece.box.offsets), torch.Size(piece.box.sizes))


class PieceSavePlanner(SavePlanner):
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


class PieceLoadPlanner(LoadPlanner):
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
        raise UnsupportedError(f"{read_item.dest_index.fqn}: the pieces are tensors only")

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        index = read_item.dest_index
        assert index.index is not None, "create_read_items_for_chunk_list sets the chunk index"
        target = self._by_fqn[index.fqn][index.index].tensor
        return narrow_tensor_by_index(target, read_item.dest_offsets, read_item.lengths)

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        pass  # resolve_tensor handed out a view of the target: the data is in place
