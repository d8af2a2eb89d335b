"""A tiny, obviously-correct in-memory storage backend: the suite's yardstick.

Checkpoints live in a module-level dict keyed by location (the path string).
Each WriteResult carries its item's bytes (:class:`StoredItem`); ``finish``
commits by storing the Metadata and those items as ONE new dict entry, so a
reader sees either the previous checkpoint or the new one, never a mix, and a
save that fails before ``finish`` commits nothing. Nothing touches the disk.
"""

from __future__ import annotations

import copy
import io
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from dcp_impl.dtypes import copy_bits, raw_bytes
from dcp_impl.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidMetadataError,
    LayoutMismatchError,
)
from dcp_impl.metadata import validate
from dcp_impl.safe_load import PicklePolicy, deliver_bytes
from spec_tests.contract.capabilities import CAPABILITIES

__all__ = ["ReferenceBackend", "ReferenceReader", "ReferenceWriter", "StoredItem", "discard"]


@dataclass(frozen=True, slots=True)
class StoredItem:
    """One written item: its bytes and, for a tensor chunk, its dtype and sizes."""

    data: bytes
    dtype: torch.dtype | None = None  # None for a BYTE_IO item
    sizes: tuple[int, ...] = ()

    def tensor(self) -> torch.Tensor:
        """The stored chunk as a new contiguous CPU tensor (bits reinterpreted, never converted)."""
        if self.dtype is None:
            raise LayoutMismatchError("stored item holds bytes, expected a tensor chunk")
        storage = torch.UntypedStorage.from_buffer(self.data, dtype=torch.uint8)  # a copy
        strides = [1] * len(self.sizes)
        for d in range(len(self.sizes) - 2, -1, -1):
            strides[d] = strides[d + 1] * max(self.sizes[d + 1], 1)
        return torch.empty(0, dtype=self.dtype).set_(storage, 0, self.sizes, strides)


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's elements in row-major order, bits unchanged (whatever its strides)."""
    # raw_bytes materialises non-contiguous and expanded views into exactly numel * itemsize
    # bytes, reinterpreted without converting; bytes(untyped_storage()) would be exact too,
    # but iterates byte by byte.
    return raw_bytes(tensor.detach().to("cpu")).numpy().tobytes()


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    metadata: Metadata
    items: dict[MetadataIndex, StoredItem]


_STORE: dict[str, _Checkpoint] = {}
_LOCK = threading.Lock()


def discard(location: str) -> None:
    """Forget the checkpoint committed at ``location`` (the suite frees memory with it)."""
    with _LOCK:
        _STORE.pop(location, None)


def _committed(location: str) -> _Checkpoint:
    with _LOCK:
        checkpoint = _STORE.get(location)
    if checkpoint is None:
        raise CheckpointNotFoundError(
            f"reference store: no committed checkpoint at {location!r}: expected a finished save"
        )
    return checkpoint


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


class ReferenceWriter(StorageWriter):
    """StorageWriter that keeps every item's bytes and commits them with the Metadata in finish."""

    def __init__(self, location: str) -> None:
        self.location = location

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        # docstring inherited
        if checkpoint_id is not None:
            self.location = os.fspath(checkpoint_id)

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        # docstring inherited
        self.is_coordinator = is_coordinator

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        # docstring inherited
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        # docstring inherited
        return plans

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        # docstring inherited
        return _done([self._write_item(item, planner) for item in plan.items])

    def _write_item(self, item: WriteItem, planner: SavePlanner) -> WriteResult:
        data = planner.resolve_data(item)
        if item.type == WriteItemType.BYTE_IO:
            if not isinstance(data, io.BytesIO):
                raise LayoutMismatchError(f"{item.index}: BYTE_IO item resolved to {type(data)}")
            stored = StoredItem(data.getvalue())
        else:
            if not isinstance(data, torch.Tensor):
                raise LayoutMismatchError(f"{item.index}: tensor item resolved to {type(data)}")
            expected = (
                tuple(item.tensor_data.chunk.sizes) if item.tensor_data else tuple(data.shape)
            )
            if tuple(data.shape) != expected:
                raise LayoutMismatchError(
                    f"{item.index}: resolved tensor has shape {tuple(data.shape)}, "
                    f"expected the planned chunk sizes {expected}"
                )
            stored = StoredItem(_raw_bytes(data), data.dtype, expected)
        return WriteResult(index=item.index, size_in_bytes=len(stored.data), storage_data=stored)

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        # docstring inherited
        items: dict[MetadataIndex, StoredItem] = {}
        for result in (r for rank_results in results for r in rank_results):
            if not isinstance(result.storage_data, StoredItem):
                raise InvalidMetadataError(
                    f"{result.index}: WriteResult.storage_data is {type(result.storage_data)}, "
                    "expected the StoredItem this writer returned"
                )
            items[result.index] = result.storage_data
        validate(metadata)  # chunks that overlap or leave a hole are never committed
        checkpoint = _Checkpoint(copy.deepcopy(metadata), items)
        with _LOCK:  # the commit point: one dict entry replaced as a whole
            _STORE[self.location] = checkpoint

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        # docstring inherited
        return isinstance(checkpoint_id, str | os.PathLike)


class ReferenceReader(StorageReader):
    """StorageReader over the checkpoint committed at its location when it is set up."""

    def __init__(self, location: str, *, trust_pickle: bool = False) -> None:
        self.location = location
        self.policy = PicklePolicy(trust=trust_pickle)
        self._checkpoint: _Checkpoint | None = None

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        # docstring inherited
        if checkpoint_id is not None:
            self.location = os.fspath(checkpoint_id)
        self._checkpoint = None

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        # docstring inherited
        return copy.deepcopy(_committed(self.location).metadata)

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        # docstring inherited
        self._checkpoint = _committed(self.location)

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        # docstring inherited
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        # docstring inherited
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        # docstring inherited
        checkpoint = self._checkpoint or _committed(self.location)
        chunks: dict[MetadataIndex, torch.Tensor] = {}
        entries: list[tuple[ReadItem, bytes]] = []
        for item in plan.items:
            stored = checkpoint.items.get(item.storage_index)
            if stored is None:
                raise CorruptCheckpointError(
                    f"{self.location!r}: no stored data for {item.storage_index}: "
                    f"expected one of {sorted(str(i) for i in checkpoint.items)[:8]}"
                )
            if item.type == LoadItemType.BYTE_IO:
                entries.append((item, stored.data))
                continue
            if item.storage_index not in chunks:
                chunks[item.storage_index] = stored.tensor()
            self._read_tensor(item, chunks[item.storage_index], planner)
        # As dcp_impl's readers: an entry that could run code when unpickled is refused (safe-load).
        deliver_bytes(self.policy, planner, entries)
        return _done(None)

    def _read_tensor(self, item: ReadItem, chunk: torch.Tensor, planner: LoadPlanner) -> None:
        starts, lengths = tuple(item.storage_offsets), tuple(item.lengths)
        if len(starts) != chunk.ndim or any(
            s < 0 or n < 0 or s + n > size
            for s, n, size in zip(starts, lengths, chunk.shape, strict=False)
        ):
            raise LayoutMismatchError(
                f"{item.storage_index}: read of offsets {starts} lengths {lengths} is outside "
                f"the stored chunk of sizes {tuple(chunk.shape)}"
            )
        region = chunk[tuple(slice(s, s + n) for s, n in zip(starts, lengths, strict=True))]
        target = planner.resolve_tensor(item)
        if tuple(target.shape) != lengths:
            raise LayoutMismatchError(
                f"{item.storage_index}: planner target has shape {tuple(target.shape)}, "
                f"expected the read lengths {lengths}"
            )
        if target.dtype != chunk.dtype:
            raise LayoutMismatchError(
                f"{item.storage_index}: planner target has dtype {target.dtype}, expected the "
                f"stored {chunk.dtype}: a load never converts"
            )
        # copy_ through a detached alias (the target may require grad); the planner gets back
        # the very tensor it resolved, as commit_tensor's contract says.
        copy_bits(target.detach(), region)
        planner.commit_tensor(item, target)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        # docstring inherited
        return isinstance(checkpoint_id, str | os.PathLike)


# Everything except: integrity (nothing is ever on disk, so there is nothing to corrupt or
# truncate and no check to make); atomic-commit (the commit IS one atomic dict swap, but the
# store lives and dies with its process, so "killed mid-save, previous checkpoint still
# loadable" cannot be observed from another process); multiprocess (the store is per-process,
# so real ranks in separate processes cannot share a checkpoint).
_REFERENCE_CAPS = frozenset(CAPABILITIES) - {
    "integrity",
    "integrity-pieces",
    "atomic-commit",
    "multiprocess",
}


@dataclass(frozen=True, slots=True)
class ReferenceBackend:
    """The ``reference`` built-in backend."""

    name: str = "reference"
    capabilities: frozenset[str] | None = field(default=_REFERENCE_CAPS, repr=False)

    def make_writer(self, path: str) -> StorageWriter:
        """A writer committing into the in-memory store under ``path``."""
        return ReferenceWriter(path)

    def make_reader(self, path: str) -> StorageReader:
        """A reader of the checkpoint committed in the in-memory store under ``path``."""
        return ReferenceReader(path)

    def trusting_reader(self, path: str) -> StorageReader:
        """A reader that hands every non-tensor entry to the planner unchecked."""
        return ReferenceReader(path, trust_pickle=True)

    def cleanup(self, path: str) -> None:
        """Forget the checkpoint under ``path`` (the suite calls it when a test is done)."""
        discard(path)
