"""Broken backends that load a whole checkpoint, in the order it was saved, exactly, but get
loads as jobs do them wrong: part of a checkpoint, a reused reader, a file gone.

Family: loads (``spec_tests/properties/loads.py``). Each models a bug real readers have had.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
from torch.futures import Future

from spec_tests.selftest.wrap import LoadPlannerProxy, RemappedPlanner, Wrapped, WrappedReader

__all__ = [
    "ConvertsToDestinationDtype",
    "FillsStorageFromItsStart",
    "KeepsFirstCheckpointAfterReset",
    "MissingFileReadsAsZeros",
    "ReadsStoredItemsInOrder",
]


class _Paired(WrappedReader):
    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        # "The plan asks for the checkpoint's entries: read them as stored": the i-th read
        # item is served from the i-th stored item.
        stored = list(self.metadata.storage_data)
        paired = [
            dataclasses.replace(item, storage_index=index)
            for item, index in zip(plan.items, stored, strict=False)
        ]
        proxy = RemappedPlanner(planner, paired, plan.items[: len(paired)])
        return self.inner.read_data(dataclasses.replace(plan, items=paired), proxy)

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        self.metadata = self.inner.read_metadata(*args, **kwargs)
        return self.metadata


class ReadsStoredItemsInOrder(Wrapped):
    """Pairs the plan's read items with the checkpoint's stored items by position.

    A whole checkpoint asked for in the order it was saved loads exactly; a subset, or the
    same entries in another order, loads other entries' bytes (of the same size) or fails.

    Family: loads (a subset, in another order).
    """

    base = "dcp_impl-fs"
    reader = _Paired
    family = "loads"


class _FirstCheckpoint(WrappedReader):
    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        # "Opening a checkpoint is expensive": the first location sticks for the reader's life.
        first = getattr(self, "first", None)
        self.first = first if first is not None else checkpoint_id
        super().reset(self.first, **kwargs)


class KeepsFirstCheckpointAfterReset(Wrapped):
    """Keeps the checkpoint it first loaded: later resets to another checkpoint are ignored.

    A reader made for one location and reset once passes; one reader reused for a second
    checkpoint silently loads the first one's values.

    Family: loads (one reader for several checkpoints).
    """

    base = "dcp_impl-fs"
    reader = _FirstCheckpoint
    family = "loads"


class _SparseFiles(WrappedReader):
    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        # "A chunk that was all zeros is not written": items of a missing file read as zeros.
        stored = self.metadata.storage_data
        present: list[ReadItem] = []
        absent: list[ReadItem] = []
        for item in plan.items:
            where = os.path.join(self.location, stored[item.storage_index].path)
            (present if os.path.exists(where) else absent).append(item)
        for item in absent:
            if item.type == LoadItemType.TENSOR:
                target = planner.resolve_tensor(item)
                target.zero_()
                planner.commit_tensor(item, target)
        return self.inner.read_data(dataclasses.replace(plan, items=present), planner)

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        self.metadata = self.inner.read_metadata(*args, **kwargs)
        return self.metadata


class MissingFileReadsAsZeros(Wrapped):
    """Reads a missing data file as zeros (as if the writer skipped all-zero chunks).

    Every save writes every file, so round trips pass; a checkpoint that lost a file loads
    with zeros in place of its tensors instead of raising.

    Family: loads (a file removed or emptied).
    """

    base = "dcp_impl-fs"
    reader = _SparseFiles
    family = "loads"


class _Converted(LoadPlannerProxy):
    """Reads each tensor in its stored dtype, then copies it into the planner's destination."""

    def __init__(self, inner: LoadPlanner, metadata: Metadata) -> None:
        super().__init__(inner)
        self.metadata = metadata
        self.staged: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        target = self.inner.resolve_tensor(read_item)
        entry = self.metadata.state_dict_metadata[read_item.storage_index.fqn]
        stored = entry.properties.dtype  # type: ignore[union-attr]
        if target.dtype == stored:
            return target
        staged = torch.empty(target.shape, dtype=stored)
        self.staged[id(read_item)] = (staged, target)
        return staged

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        staged, target = self.staged.pop(id(read_item), (tensor, tensor))
        if target is not staged:
            target.copy_(staged)  # "the model's dtype wins", as torch's readers do
        self.inner.commit_tensor(read_item, target)


class _Converting(WrappedReader):
    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        self.metadata = self.inner.read_metadata(*args, **kwargs)
        return self.metadata

    def load_planner(self, planner: LoadPlanner) -> LoadPlanner:
        return _Converted(planner, self.metadata)


class ConvertsToDestinationDtype(Wrapped):
    """Converts stored tensors into destinations of another dtype, as torch's readers do
    (pytorch#187138): a bf16 model loading an fp32 checkpoint loses precision, no error.

    Family: loads (a destination of another dtype).
    """

    base = "dcp_impl-fs"
    reader = _Converting
    family = "loads"


class _StorageStart(LoadPlannerProxy):
    """Hands the reader, for a contiguous destination, the same shape at its storage's start."""

    def __init__(self, inner: LoadPlanner) -> None:
        super().__init__(inner)
        self.resolved: dict[int, torch.Tensor] = {}

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        target = self.inner.resolve_tensor(read_item)
        if not target.is_contiguous() or not target.storage_offset():
            return target
        # "Read straight into the tensor's memory": its storage, from byte 0.
        start = torch.empty(0, dtype=target.dtype).set_(
            target.untyped_storage(), 0, target.shape, target.stride()
        )
        self.resolved[id(read_item)] = target
        return start

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        self.inner.commit_tensor(read_item, self.resolved.pop(id(read_item), tensor))


class _FromStorageStart(WrappedReader):
    def load_planner(self, planner: LoadPlanner) -> LoadPlanner:
        return _StorageStart(planner)


class FillsStorageFromItsStart(Wrapped):
    """Reads each item into its destination's storage from the storage's first byte, not from
    the destination's offset in it: right for a tensor of its own, wrong for one of the views
    of a flat buffer (FSDP's flat parameters), whose neighbour it overwrites.

    Family: loads (destinations inside a larger buffer).
    """

    base = "dcp_impl-fs"
    reader = _FromStorageStart
    family = "loads"
