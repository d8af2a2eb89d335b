"""What dcp_impl's two backends share beyond the store and the read pipeline: where their
writers and readers point (:class:`StoreLocated`), how a reader serves a load plan
(:class:`StoreReading`), the check of the ``verify`` option and a rank's failed writes."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner
from torch.futures import Future

from dcp_impl import transfer
from dcp_impl._torch_options import check_count
from dcp_impl.errors import InvalidOptionError, WriteFailedError
from dcp_impl.safe_load import PicklePolicy, deliver_bytes
from dcp_impl.store import SharedReader, Store, is_checkpoint_id, open_store

__all__ = ["StoreLocated", "StoreReading", "check_flag", "check_verify", "nothing_committed"]

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
