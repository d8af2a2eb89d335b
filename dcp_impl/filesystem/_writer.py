"""FileSystemWriter: data files through a Store, then the metadata, committed last (the
layout is in the package's docstring and docs/format.md)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.distributed.checkpoint.filesystem import SerializationFormat
from torch.distributed.checkpoint.metadata import (
    Metadata,
    MetadataIndex,
    StorageMeta,
)
from torch.distributed.checkpoint.planner import (
    SavePlan,
    SavePlanner,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult
from torch.futures import Future

from dcp_impl import _torch_options as options
from dcp_impl import dtypes, transfer
from dcp_impl import metadata as metadata_format
from dcp_impl._backend import StoreLocated, nothing_committed
from dcp_impl._pool import parallel_map
from dcp_impl.errors import (
    ConcurrentSaveError,
    InvalidMetadataError,
    OverwriteRefusedError,
    UnsupportedError,
)
from dcp_impl.filesystem import _ranklocal
from dcp_impl.layout import Box
from dcp_impl.store import Store, commit_lock, older_save, open_store, save_stamp, stamp_of

__all__ = ["METADATA_FILE", "FileSystemWriter", "is_data_file"]

METADATA_FILE = ".metadata.json"
_DATA_FILE = re.compile(r"data-[0-9a-f]{32}-r(?P<rank>[0-9]+)-[0-9]+\.bin")
_METADATA_TEMP = re.compile(re.escape(f".{METADATA_FILE}.") + r".*\.tmp")


def is_data_file(name: str) -> bool:
    """Whether ``name`` has the form of a data file this backend writes."""
    return _DATA_FILE.fullmatch(name) is not None


def _rank_of_file(name: str) -> int | None:
    match = _DATA_FILE.fullmatch(name)
    return None if match is None else int(match["rank"])


@dataclass(frozen=True, slots=True)
class _PlanSlot:
    """SavePlan.storage_data from the coordinator: the plan's position, named in its files."""

    rank: int


class FileSystemWriter(StoreLocated, StorageWriter, options.BlockingStaging):
    """Save a DCP checkpoint as data files plus ``.metadata.json`` (docs/format.md).

    The parameters up to ``serialization_format`` are torch's ``FileSystemWriter``'s, by name
    and position, with torch's meaning; values dcp_impl cannot honour raise at construction
    (docs/migrating.md). As torch's, the writer is ``dcp.async_save``'s stager (a blocking
    copy to CPU).

    Args:
        path: the directory (created if missing), an fsspec URL (``s3://bucket/prefix``,
            docs/object-stores.md) or a :class:`~dcp_impl.store.Store`.
        single_file_per_rank: one data file per rank and thread (False: one per item).
        sync_files: fsync data, metadata and the directory before the commit.
        thread_count: files written in parallel per rank.
        per_thread_copy_ahead: kept as a bound (device tensors are copied when written,
            never ahead).
        cache_staged_state_dict: keep ``async_save``'s CPU copy in pinned memory between saves.
        overwrite: False refuses a directory that holds a committed checkpoint
            (:class:`~dcp_impl.errors.OverwriteRefusedError`) before anything is written.
        _extensions: only None (stream transforms raise
            :class:`~dcp_impl.errors.UnsupportedError`).
        serialization_format: only torch's default.
        storage_options: passed to fsspec for URLs (credentials, endpoint).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Store,
        single_file_per_rank: bool = True,
        sync_files: bool = True,
        thread_count: int = 1,
        per_thread_copy_ahead: int = 10_000_000,
        cache_staged_state_dict: bool = False,
        overwrite: bool = True,
        _extensions: Sequence[object] | None = None,
        serialization_format: SerializationFormat = SerializationFormat.TORCH_SAVE,
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        options.check_count(owner, "thread_count", thread_count)
        options.check_copy_ahead(owner, per_thread_copy_ahead)
        options.check_extensions(owner, _extensions)
        options.check_serialization_format(owner, serialization_format)
        self.storage_options = storage_options
        self.store = open_store(path, storage_options)
        self.single_file_per_rank = single_file_per_rank
        self.thread_count = thread_count
        self.per_thread_copy_ahead = per_thread_copy_ahead
        self._set_up_staging(cache_staged_state_dict)
        self.sync_files = sync_files
        self.overwrite = overwrite
        self.save_id = uuid.uuid4().hex
        self._file_id = save_stamp()
        self._alone: int | None = None  # the rank, in a collective-free save

    def reset(
        self, checkpoint_id: str | os.PathLike[str] | Store | None = None, **kwargs: Any
    ) -> None:
        # docstring inherited
        self._retarget(checkpoint_id)
        self.save_id = uuid.uuid4().hex
        self._file_id = save_stamp()

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        # docstring inherited
        self._alone = _ranklocal.rank_of(type(self).__name__, kwargs)
        # Fresh names for every save, even when one writer saves twice without reset() or
        # the planner replays a cached plan: a new save never touches the committed files.
        self._file_id = save_stamp()
        # One rank decides, before any rank writes, so every rank sees the same answer.
        if is_coordinator and not self.overwrite and self.store.exists(METADATA_FILE):
            raise OverwriteRefusedError(
                f"{self.store.url}: Checkpoint already exists and overwrite=False: expected no "
                f"committed checkpoint, found {METADATA_FILE}"
            )

    def prepare_local_plan(self, plan: SavePlan, **kwargs: Any) -> SavePlan:
        # docstring inherited
        self.store.make_dirs()
        return plan

    def prepare_global_plan(self, plans: list[SavePlan], **kwargs: Any) -> list[SavePlan]:
        # docstring inherited
        # Collective-free, each rank plans alone: its one plan is its own rank's.
        first = 0 if self._alone is None else self._alone
        return [replace(plan, storage_data=_PlanSlot(first + i)) for i, plan in enumerate(plans)]

    def write_data(
        self, plan: SavePlan, planner: SavePlanner, **kwargs: Any
    ) -> Future[list[WriteResult]]:
        # docstring inherited
        if not isinstance(plan.storage_data, _PlanSlot):
            raise InvalidMetadataError(
                f"SavePlan.storage_data: expected the slot set by prepare_global_plan, "
                f"found {plan.storage_data!r}"
            )
        if self.single_file_per_rank:
            buckets = _split(plan.items, self.thread_count)
        else:
            buckets = [[item] for item in plan.items]
        prefix = f"data-{self._file_id}-r{plan.storage_data.rank}"
        names = [f"{prefix}-{k}.bin" for k in range(len(buckets))]
        jobs = list(zip(names, buckets, strict=True))
        with nothing_committed(self.store, names, len(plan.items)):
            per_file = parallel_map(
                jobs,
                lambda: _BucketWriter(self.store, planner, self.sync_files),
                thread_count=self.thread_count,
            )
            if self.sync_files and jobs:
                self.store.sync()
        future: Future[list[WriteResult]] = Future()
        future.set_result([result for results in per_file for result in results])
        return future

    def finish(self, metadata: Metadata, results: list[list[WriteResult]], **kwargs: Any) -> None:
        # docstring inherited
        locations: dict[MetadataIndex, metadata_format.ItemLocation] = {}
        for result in (r for rank_results in results for r in rank_results):
            if not isinstance(result.storage_data, metadata_format.ItemLocation):
                raise InvalidMetadataError(
                    f"WriteResult for {result.index}: expected an ItemLocation, "
                    f"found {result.storage_data!r}"
                )
            locations[result.index] = result.storage_data
        metadata.storage_data = locations
        if metadata.storage_meta is None:
            metadata.storage_meta = self.storage_meta()
        keep = {loc.path for loc in locations.values()}
        if self._alone is None:
            # Chunks that overlap or stop short of a tensor's end are refused before the
            # commit: a hole would load as whatever the destination held.
            metadata_format.validate(metadata)
            text = metadata_format.dumps(metadata)
        # Checking that this save's files are all there, replacing the metadata and removing
        # superseded files is one step among concurrent saves (docs/format.md): a newer
        # save removes only files of saves that started before it, and such a save, when
        # it commits later, finds its files gone and fails instead of committing them.
        # Collective-free ranks commit one at a time under the same lock.
        with commit_lock(self.store) as lock:
            listed = self.store.list_files()
            _check_present(self.store, keep, listed)
            if self._alone is None:
                self.store.commit(METADATA_FILE, text.encode(), sync=self.sync_files)
                with contextlib.suppress(OSError):  # a collective-free save's, superseded now
                    _ranklocal.remove_rank_metadata(self.store)
            else:
                _ranklocal.commit_rank(
                    self.store,
                    self._alone,
                    metadata,
                    sync=self.sync_files,
                    supersedes=METADATA_FILE,
                )
            for name in _superseded(keep, listed, stamp_of(self._file_id), self._alone):
                lock.refresh()  # thousands of removals take minutes on an object store
                with contextlib.suppress(OSError):  # best effort: left behind is harmless
                    self.store.remove([name])

    def storage_meta(self) -> StorageMeta | None:
        # docstring inherited
        return StorageMeta(checkpoint_id=self.checkpoint_id, save_id=self.save_id)


def _split(items: Sequence[WriteItem], count: int) -> list[list[WriteItem]]:
    """At most ``count`` non-empty buckets of similar byte size, largest items first."""
    buckets: list[list[WriteItem]] = [[] for _ in range(max(1, min(count, len(items))))]
    sizes = [0] * len(buckets)
    for item in sorted(items, key=lambda i: -_nbytes(i)):
        smallest = sizes.index(min(sizes))
        buckets[smallest].append(item)
        sizes[smallest] += _nbytes(item)
    return [bucket for bucket in buckets if bucket]


def _nbytes(item: WriteItem) -> int:
    # WriteItem.tensor_storage_size() raises for torch's bits dtypes; the dtype table does not.
    data = item.tensor_data
    if data is None:
        return 0
    return Box.full(data.chunk.sizes).numel * dtypes.by_torch(data.properties.dtype).itemsize


class _BucketWriter:
    """Writes one bucket of items into one new data file (a worker of parallel_map)."""

    def __init__(self, store: Store, planner: SavePlanner, sync: bool) -> None:
        self._store = store
        self._planner = planner
        self._sync = sync

    def __call__(self, job: tuple[str, list[WriteItem]]) -> list[WriteResult]:
        name, items = job
        results = []
        with self._store.create(name, sync=self._sync) as out:
            for item in items:
                stored = self._write(out, item)
                location = metadata_format.ItemLocation(
                    name, stored.offset, stored.length, stored.checksum
                )
                results.append(WriteResult(item.index, stored.length, location))
        return results

    def _write(self, out: transfer.ItemWriter, item: WriteItem) -> transfer.StoredRange:
        data = self._planner.resolve_data(item)
        if item.type == WriteItemType.BYTE_IO:
            if not isinstance(data, io.BytesIO):
                raise UnsupportedError(
                    f"{item.index.fqn!r}: expected io.BytesIO for a BYTE_IO item, found "
                    f"{type(data).__name__}"
                )
            with data.getbuffer() as view:
                return out.write_bytes(view)
        if not isinstance(data, torch.Tensor):
            raise UnsupportedError(
                f"{item.index.fqn!r}: expected a tensor, found {type(data).__name__}"
            )
        return out.write_tensor(data)

    def close(self) -> None:
        pass


def _check_present(store: Store, names: set[str], listed: list[str]) -> None:
    """Refuse to commit when a newer save removed some of this save's data files."""
    missing = sorted(names - set(listed))
    if missing:
        store.remove(names)
        raise ConcurrentSaveError(
            f"{store.url}: expected this save's {len(names)} data files before committing, "
            f"found {len(missing)} removed (e.g. {missing[0]}) by a newer save to the same "
            "location; nothing was committed, the newer checkpoint is intact"
        )


def _superseded(
    keep: set[str], names: list[str], started: int, rank: int | None = None
) -> list[str]:
    """Of the files ``names`` listed before the commit, data files that ``keep`` does not
    name of saves that started before ``started`` (ns), and stale metadata temp files (the
    commit step runs under the lock, so nothing else commits or removes meanwhile).

    Files of saves that started later belong to saves that may still commit: they stay.
    ``rank`` (a collective-free save) limits this to that rank's data files: the other
    ranks' files belong to the same checkpoint.
    """
    return [
        name
        for name in names
        if name not in keep
        and (
            (is_data_file(name) and older_save(name[5:37], started))
            or _METADATA_TEMP.fullmatch(name) is not None
        )
        and (rank is None or _rank_of_file(name) == rank)
    ]
