"""Broken backends whose bug is on the load side: what the reader returns, hides or runs.

Each backend's docstring says what it breaks and which property family must reject it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import pickle
import posixpath
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from fsspec.core import url_to_fs
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
from torch.distributed.checkpoint.storage import StorageReader
from torch.futures import Future

from dcp_impl.filesystem import METADATA_FILE, FileSystemReader
from spec_tests.selftest.wrap import LoadPlannerProxy, RemappedPlanner, Wrapped, WrappedReader

__all__ = [
    "CommitsDespiteReadErrors",
    "DeletesAfterFailedLoad",
    "DropsPlannerData",
    "FindsItemsByLinearSearch",
    "ReadsFromChunkOrigin",
    "ReportsBoolAsUint8",
    "SkipsChecksums",
    "SqueezesSizes",
    "SubBoxOffByOne",
    "SwallowsReadErrors",
    "TrustsPickledEntries",
    "UnpicklesStoredFile",
    "ZerosReadsOver4MiB",
]

_MiB = 1 << 20


def _done() -> Future[None]:
    future: Future[None] = Future()
    future.set_result(None)
    return future


# --- data changed on the way out ------------------------------------------------------------------


class _BounceBuffer(LoadPlannerProxy):
    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        buffer = 4 * _MiB
        if tensor.numel() * tensor.element_size() > buffer:
            # Only the first bounce buffer's worth of bytes reaches the destination.
            dense = tensor.detach().contiguous()
            dense.reshape(-1).view(torch.uint8)[buffer:] = 0
            if dense.data_ptr() != tensor.data_ptr():
                tensor.detach().copy_(dense)
        self.inner.commit_tensor(read_item, tensor)


class _Bounced(WrappedReader):
    def load_planner(self, planner: LoadPlanner) -> LoadPlanner:
        # docstring inherited
        return _BounceBuffer(planner)


class ZerosReadsOver4MiB(Wrapped):
    """Copies reads through a 4 MiB bounce buffer: bytes of a read past 4 MiB come back zero.

    Family: roundtrip (sizes past every buffer: one element past 4 MiB).
    """

    base = "dcp_impl-fs"
    reader = _Bounced
    family = "roundtrip"


def _moving(move: Callable[[tuple[int, ...]], tuple[int, ...]]) -> type[WrappedReader]:
    """A reader class whose reads start at ``move(storage_offsets)`` instead."""

    class _Reader(WrappedReader):
        def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
            moved = [
                dataclasses.replace(i, storage_offsets=torch.Size(move(tuple(i.storage_offsets))))
                for i in plan.items
            ]
            proxy = RemappedPlanner(planner, moved, plan.items)
            return self.inner.read_data(dataclasses.replace(plan, items=moved), proxy)

    return _Reader


def _one_early(offsets: tuple[int, ...]) -> tuple[int, ...]:
    # The first offset past the chunk's start is taken as 1-based and "converted" once more.
    for dim, start in enumerate(offsets):
        if start > 0:
            return (*offsets[:dim], start - 1, *offsets[dim + 1 :])
    return offsets


class SubBoxOffByOne(Wrapped):
    """A read that starts inside a stored chunk starts one element early in its first such dim.

    Family: resharding (sub-box reads).
    """

    base = "dcp_impl-fs"
    reader = _moving(_one_early)
    family = "resharding"


class ReadsFromChunkOrigin(Wrapped):
    """Ignores where inside a stored chunk a read starts: every read starts at the chunk's origin.

    It does not claim ``reshard``, yet a resharded load succeeds with the wrong elements.
    Family: loud refusal of unclaimed capabilities.
    """

    reader = _moving(lambda offsets: (0,) * len(offsets))
    unclaimed: ClassVar[frozenset[str]] = frozenset({"reshard"})
    family = "unclaimed"


# --- errors hidden --------------------------------------------------------------------------------


class _Swallowing(WrappedReader):
    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        with contextlib.suppress(Exception):  # "a failed read is retried by the next load"
            self.inner.read_data(plan, planner).wait()
        return _done()


class SwallowsReadErrors(Wrapped):
    """read_data catches its own read errors and completes, the targets left as they were.

    Family: faults (a failed load must raise).
    """

    reader = _Swallowing
    family = "faults"


class _CommitAnyway(WrappedReader):
    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        try:
            self.inner.read_data(plan, planner).wait()
        except Exception:
            # Tell the planner everything arrived, so that the load "completes".
            for item in plan.items:
                if item.type != LoadItemType.BYTE_IO:
                    planner.commit_tensor(item, planner.resolve_tensor(item))
        return _done()


class CommitsDespiteReadErrors(Wrapped):
    """On a read error (a checksum mismatch) commits every target anyway and completes.

    Family: faults (integrity: damaged data must raise, never load).
    """

    base = "dcp_impl-fs"
    reader = _CommitAnyway
    family = "faults"


class _Unverified(Wrapped):
    def inner_reader(self, path: str) -> StorageReader:
        return FileSystemReader(path, verify=False)


class SkipsChecksums(_Unverified):
    """Claims ``integrity`` but reads without verifying checksums ("for speed").

    Family: faults (a flipped bit must raise on load).
    """

    base = "dcp_impl-fs"
    family = "faults"


class _Cleaning(WrappedReader):
    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        try:
            self.inner.read_data(plan, planner).wait()
        except Exception:
            fs, root = url_to_fs(self.location)  # "a checkpoint that fails to load is corrupt"
            with contextlib.suppress(OSError):
                fs.rm(fs.find(root))
            raise
        return _done()


class DeletesAfterFailedLoad(Wrapped):
    """Deletes the checkpoint's files when a load of it fails, taking it for corrupt.

    Family: faults (a failed load deletes nothing).
    """

    base = "dcp_impl-fs"
    reader = _Cleaning
    family = "faults"


class _TorchFallback(WrappedReader):
    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        try:
            return self.inner.read_metadata(*args, **kwargs)
        except Exception:
            # "Maybe torch wrote it": torch's own .metadata format is a pickle.
            fs, root = url_to_fs(self.location)
            raw = fs.cat_file(posixpath.join(root, METADATA_FILE))
            if raw[:2] == b"PK":
                return torch.load(io.BytesIO(raw), weights_only=False)
            return pickle.loads(raw)  # the planted bug


class TrustsPickledEntries(Wrapped):
    """Claims ``safe-load`` but builds its reader with ``trust_pickle=True`` ("old checkpoints
    hold custom classes"): bytes entries reach the planner, and its unpickler, unchecked.

    Family: hostile (an entry whose unpickling runs code must never run on load).
    """

    base = "dcp_impl-fs"
    family = "hostile"

    def inner_reader(self, path: str) -> StorageReader:
        # docstring inherited
        return FileSystemReader(path, trust_pickle=True)


class UnpicklesStoredFile(Wrapped):
    """Falls back to unpickling the metadata file when it is not valid JSON (torch's format).

    Family: hostile (a stored pickle must never run on load).
    """

    base = "dcp_impl-fs"
    reader = _TorchFallback
    family = "hostile"


# --- metadata -----------------------------------------------------------------------------------


def _metadata_reader(change: Callable[[Metadata], None]) -> type[WrappedReader]:
    """A reader class whose read_metadata applies ``change`` to the base's answer."""

    class _Reader(WrappedReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
            metadata = self.inner.read_metadata(*args, **kwargs)
            change(metadata)
            return metadata

    return _Reader


def _bool_as_uint8(metadata: Metadata) -> None:
    for entry in metadata.state_dict_metadata.values():
        if isinstance(entry, TensorStorageMetadata) and entry.properties.dtype is torch.bool:
            entry.properties = dataclasses.replace(entry.properties, dtype=torch.uint8)


class ReportsBoolAsUint8(Wrapped):
    """read_metadata reports bool tensors as uint8 (its format has one code for both).

    Family: metadata (sizes and dtypes read back equal).
    """

    reader = _metadata_reader(_bool_as_uint8)
    family = "metadata"


def _squeeze(metadata: Metadata) -> None:
    for entry in metadata.state_dict_metadata.values():
        if isinstance(entry, TensorStorageMetadata):
            keep = [d for d, n in enumerate(entry.size) if n != 1]
            entry.size = torch.Size([entry.size[d] for d in keep])
            for chunk in entry.chunks:
                chunk.offsets = torch.Size([chunk.offsets[d] for d in keep])
                chunk.sizes = torch.Size([chunk.sizes[d] for d in keep])


class SqueezesSizes(Wrapped):
    """read_metadata drops every size-1 dimension of a tensor (and of its chunks).

    Family: metadata (sizes read back equal).
    """

    base = "dcp_impl-fs"
    reader = _metadata_reader(_squeeze)
    family = "metadata"


def _no_planner_data(metadata: Metadata) -> None:
    metadata.planner_data = None  # the format has no field for it


class DropsPlannerData(Wrapped):
    """Claims ``metadata-exact`` but does not keep ``planner_data``.

    Family: metadata (``test_read_metadata_equals_finish``).
    """

    reader = _metadata_reader(_no_planner_data)
    family = "metadata"


class _LinearSearch(WrappedReader):
    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        super().set_up_storage_reader(metadata, is_coordinator, *args, **kwargs)
        self._stored = list(metadata.storage_data)

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        for item in plan.items:  # "check each item is stored before reading any"
            want = (item.storage_index.fqn, tuple(item.storage_index.offset or ()))
            if not any((k.fqn, tuple(k.offset or ())) == want for k in self._stored):
                raise KeyError(item.storage_index)
        return super().read_data(plan, planner)


class FindsItemsByLinearSearch(Wrapped):
    """Checks each read item against a list of the stored keys, one linear search per item:
    loading n chunks costs O(n^2) (as the chunk lookups of custom readers often do).

    Family: scale (ten times the chunks must cost about ten times as much).
    """

    base = "dcp_impl-fs"
    reader = _LinearSearch
    family = "scale"
