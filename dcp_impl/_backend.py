"""What dcp_impl's two backends share beyond the store and the read pipeline: where their
writers and readers point (:class:`StoreLocated`), how a reader serves a load plan
(:class:`StoreReading`) and finds each item's bytes (:class:`Locator`), the check of the
``verify`` option and a rank's failed writes."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner
from torch.futures import Future

from dcp_impl import transfer
from dcp_impl._torch_options import check_count
from dcp_impl.errors import InvalidMetadataError, InvalidOptionError, WriteFailedError
from dcp_impl.metadata import ItemLocation
from dcp_impl.safe_load import PicklePolicy, deliver_bytes
from dcp_impl.store import SharedReader, Store, is_checkpoint_id, open_store

__all__ = [
    "Locator",
    "StoreLocated",
    "StoreReading",
    "check_flag",
    "check_verify",
    "nothing_committed",
]

CheckpointId = str | os.PathLike[str] | Store


class StoreLocated:
    """A writer's or reader's place: the Store it works on, named by a path, a URL or a Store."""

    store: Store
    storage_options: Mapping[str, Any] | None

    @property
    def checkpoint_id(self) -> str:
        """The directory, folder or URL this writer or reader works on."""
        return self.store.url

    def _retarget(self, checkpoint_id: CheckpointId | None) -> None:
        """Work on ``checkpoint_id`` from now on (None: where it is), as ``reset`` asks."""
        if checkpoint_id is not None:
            self.store = open_store(checkpoint_id, self.storage_options)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: CheckpointId, **kwargs: Any) -> bool:
        """Whether ``checkpoint_id`` names a place a Store can open; never raises."""
        return is_checkpoint_id(checkpoint_id)


class Locator:
    """Where each storage key's bytes are, from the committed metadata: a
    :class:`~dcp_impl.transfer.StoredItem` made when a read asks for the key, in O(1), so a
    rank's plan costs time in its own items, not in every item of the checkpoint."""

    def __init__(self, store: Store, metadata: Metadata) -> None:
        self._store, self._metadata = store, metadata
        self._by_offsets: dict[str, dict[tuple[int, ...], ChunkStorageMetadata]] = {}

    def __call__(self, index: MetadataIndex) -> transfer.StoredItem:
        location = self._metadata.storage_data.get(index)
        if not isinstance(location, ItemLocation):
            raise InvalidMetadataError(
                f"{self._store.url}: expected an ItemLocation for {index}, found {location!r}"
            )
        entry = self._metadata.state_dict_metadata.get(index.fqn)
        sizes: tuple[int, ...]
        if isinstance(entry, BytesStorageMetadata):
            sizes, dtype = (location.length,), torch.uint8
            label = f"{index.fqn!r} (bytes)"
        elif isinstance(entry, TensorStorageMetadata):
            chunk = self._chunk(entry, index)
            sizes, dtype = tuple(chunk.sizes), entry.properties.dtype
            label = f"{index.fqn!r} chunk at offsets {tuple(chunk.offsets)}"
        else:
            raise InvalidMetadataError(f"{self._store.url}: no metadata entry for {index.fqn!r}")
        return transfer.StoredItem(
            self._store.path(location.path),
            location.offset,
            location.length,
            sizes,
            dtype,
            location.checksum,
            label,
        )

    def _chunk(self, entry: TensorStorageMetadata, index: MetadataIndex) -> ChunkStorageMetadata:
        """The key's chunk: by the planner's index hint, else by offsets (a table per tensor,
        built on first use)."""
        chunks = entry.chunks
        hint = index.index
        if hint is not None and 0 <= hint < len(chunks) and chunks[hint].offsets == index.offset:
            return chunks[hint]  # the hint is probed first, as torch does
        table = self._by_offsets.get(index.fqn)
        if table is None:
            table = self._by_offsets[index.fqn] = {}
            for chunk in chunks:  # the first chunk at given offsets wins, as a scan finds it
                table.setdefault(tuple(chunk.offsets), chunk)
        found = table.get(tuple(index.offset or ()))
        if found is None or index.offset is None:
            raise InvalidMetadataError(f"{index.fqn!r}: no stored chunk at offsets {index.offset}")
        return found


class StoreReading(StoreLocated):
    """A reader's plan served by the one read pipeline (:func:`dcp_impl.transfer.read_items`),
    with the shared reads of ``share_reads`` (:class:`dcp_impl.store.SharedReader`) where on."""

    thread_count: int | None
    verify: transfer.Verify
    pickle_policy: PicklePolicy
    max_inflight_bytes: int | None = None
    convert_dtypes: bool = False
    share_reads: transfer.ShareReads = None
    share_timeout: float = transfer.DEFAULT_SHARE_TIMEOUT
    _locator: Locator | None = None

    def _configure(
        self,
        *,
        thread_count: int | None,
        verify: transfer.Verify,
        pickle_policy: PicklePolicy,
        max_inflight_bytes: int | None,
        convert_dtypes: bool,
        share_reads: transfer.ShareReads,
        share_timeout: float,
    ) -> None:
        """Check and keep the options both readers take (a typed error naming the reader)."""
        owner = type(self).__name__
        if thread_count is not None:
            check_count(owner, "thread_count", thread_count)
        check_verify(owner, verify)
        transfer.check_max_inflight(owner, max_inflight_bytes)
        check_flag(owner, "convert_dtypes", convert_dtypes)
        transfer.check_share_reads(owner, share_reads, share_timeout)
        self.thread_count, self.verify, self.pickle_policy = thread_count, verify, pickle_policy
        self.max_inflight_bytes, self.convert_dtypes = max_inflight_bytes, convert_dtypes
        self.share_reads, self.share_timeout = share_reads, share_timeout

    def _set_up(self, metadata: Metadata) -> None:
        """``set_up_storage_reader``: find this load's items in ``metadata`` from now on."""
        if not isinstance(metadata.storage_data, dict):
            raise InvalidMetadataError(
                f"{self.store.url}: expected storage_data mapping items to ItemLocations, "
                f"found {type(metadata.storage_data).__name__}"
            )
        self._locator = Locator(self.store, metadata)

    def _locate(self, index: MetadataIndex) -> transfer.StoredItem:
        """Where ``index``'s bytes are, in the metadata given to ``set_up_storage_reader``."""
        if self._locator is None:
            raise RuntimeError("read_data called before set_up_storage_reader")
        return self._locator(index)

    def _share_local(self, plan: LoadPlan) -> LoadPlan:
        """``prepare_local_plan``: with shared reads, tell the coordinator this rank's host."""
        return plan if self.share_reads is None else transfer.mark_host(plan)

    def _share_global(
        self, plans: list[LoadPlan], locate: Callable[[MetadataIndex], transfer.StoredItem]
    ) -> list[LoadPlan]:
        """``prepare_global_plan``: with shared reads, an owner for each item several ranks
        of a host need."""
        if self.share_reads is None:
            return plans
        return transfer.share_plans(plans, lambda index: locate(index).length)

    def _read_all(
        self,
        plan: LoadPlan,
        planner: LoadPlanner,
        locate: Callable[[MetadataIndex], transfer.StoredItem],
        check: Callable[[], None] | None = None,
    ) -> Future[None]:
        """Read ``plan`` (then run ``check``). A rank with shared items reads on a thread of
        its own and the future completes when it is done: ranks that one process plays in
        turn (each ``read_data`` before any wait) can then wait for each other's items."""
        share = plan.storage_data if isinstance(plan.storage_data, transfer.SharePlan) else None
        reader: transfer.RequestReader = self.store
        shared: SharedReader | None = None
        if share is not None:
            shared = SharedReader(self.store, share, self.share_timeout)
            reader, locate = shared, shared.locating(locate)

        def work() -> None:
            try:
                transfer.read_items(
                    plan.items,
                    planner,
                    locate,
                    reader,
                    thread_count=self.thread_count,
                    verify=self.verify,
                    deliver_bytes=functools.partial(deliver_bytes, self.pickle_policy),
                    max_inflight_bytes=self.max_inflight_bytes,
                    convert_dtypes=self.convert_dtypes,
                )
            except BaseException as err:
                if shared is not None:
                    shared.abandon(err)  # a failure before reading: peers must not wait
                raise
            if check is not None:
                check()

        future: Future[None] = Future()
        if share is None:
            work()
            future.set_result(None)
            return future
        threading.Thread(
            target=_complete, args=(future, work), name=f"dcp_impl-shared-r{share.rank}"
        ).start()
        return future


def _complete(future: Future[None], work: Callable[[], None]) -> None:
    try:
        work()
    except BaseException as err:  # the caller's wait raises it
        future.set_exception(err)  # type: ignore[arg-type]  # torch's stub says None
    else:
        future.set_result(None)


def check_flag(owner: str, name: str, value: object) -> None:
    """Refuse a boolean option that is not a bool (``"no"`` and ``0`` are not)."""
    if not isinstance(value, bool):
        raise InvalidOptionError(f"{owner}: {name} expected True or False, got {value!r}")


def check_verify(owner: str, value: object) -> None:
    """Refuse a ``verify`` other than True, False or ``"whole"``
    (see ``dcp_impl.transfer.Verify``)."""
    if value is not True and value is not False and value != "whole":
        raise ValueError(f"{owner}: verify expected True, False or 'whole', got {value!r}")


@contextlib.contextmanager
def nothing_committed(store: Store, names: Sequence[str], count: int) -> Iterator[None]:
    """Run one rank's ``write_data`` of ``count`` items into the files ``names`` of ``store``.

    On any failure the files are removed (best effort: the failure is what to report) and
    :class:`~dcp_impl.errors.WriteFailedError` says that nothing was committed, chained to
    the failure; an interrupt (not an ``Exception``) removes them and passes unchanged.
    """
    try:
        yield
    except BaseException as err:
        with contextlib.suppress(OSError):
            store.remove(names)
        if not isinstance(err, Exception):
            raise
        raise WriteFailedError(
            f"{store.url}: writing {count} items failed: {err!r}; nothing was committed"
        ) from err
