"""Shared reads through shared memory: each stored item several ranks of a host need is read
from storage once, by its owner, and taken by the others from the host's memory.

:class:`SharedReader` is a :class:`~dcp_impl.transfer.RequestReader` over the store, for one rank's
:class:`~dcp_impl.transfer.SharePlan`. Its ``read``:

1. joins the load's segment, a folder ``SHM_ROOT/<key>`` (created by whichever rank comes
   first), leaving ``pid-<rank>`` so that peers can tell a dead owner from a slow one;
2. reads the items it owns from storage, whole, into private buffers (a bounded batch at a
   time), writes each to a new file of the segment and publishes it by renaming it to
   ``item-<slot>``: a reader sees all of an item or nothing;
3. reads its unshared items from storage as usual;
4. takes every shared item it needs (its own included) from the segment through
   :func:`~dcp_impl.transfer.read_into`, exactly as from storage: with ``verify`` the item's
   stored checksum is checked again, so a bug in sharing cannot pass silently. It waits at
   most ``timeout`` seconds; a failed or dead owner, or a removed segment, ends the wait at
   once with :class:`~dcp_impl.errors.SharedReadError`;
5. leaves ``done-<rank>`` or ``failed-<rank>`` (with the error, which peers still waiting
   quote at once); the member that finds every member done, failed or dead removes the
   segment, on success and on failure alike. A rank that timed out removes it at once (a
   member has been missing that long; one that comes later recreates it, times out and
   removes it). A rank that dies before it joins while every peer succeeds leaves the
   segment behind: its peers cannot tell it from a late one. The next load on the host
   removes it (:mod:`dcp_impl.store._stale`).

No collective is involved: ``read_data`` keeps DCP's call contract, and ranks that play
their turns in one process (the conformance suite's driver) take part as processes do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import time
from collections.abc import Sequence

import torch
from torch.distributed.checkpoint.metadata import MetadataIndex

from dcp_impl.errors import SharedReadError, SharedReadTimeoutError
from dcp_impl.layout import Box
from dcp_impl.store._disk import LocalFile
from dcp_impl.store._files import storage_fault
from dcp_impl.store._stale import PID_CHARS, process_gone, read_mark, remove_stale_segments
from dcp_impl.transfer import (
    SHM_ROOT,
    Locate,
    ReadRequest,
    RequestReader,
    SharePlan,
    StoredItem,
    Target,
    read_into,
)

__all__ = ["SharedReader"]

_POLL_FIRST = 0.001  # seconds between looks at the segment, doubling up to _POLL_MAX
_POLL_MAX = 0.005
_STAGE = 64 << 20  # bytes an owner stages at once: its peers take them while it reads on
_SMALL = 16 << 20  # ready items of fewer bytes are taken on the calling thread: a pool's
# thread starts cost more than they save there (measured, perf/README.md)
_ALIGN = 64  # staged items start at multiples of this many bytes
_MAX_MESSAGE = 4096  # characters of a failed rank's error its peers quote


class SharedReader:
    """Reads requests through ``reader`` (the store), taking the items of ``share`` from the
    host's segment instead (see the module's docstring).

    Args:
        reader: reads from storage (a :class:`dcp_impl.store.Store`).
        share: this rank's part in the load's shared reads.
        timeout: seconds to wait for an item another rank publishes.
        root: the folder segments live in (:data:`SHM_ROOT`).
    """

    def __init__(
        self, reader: RequestReader, share: SharePlan, timeout: float, root: str = SHM_ROOT
    ) -> None:
        self._reader = reader
        self._share = share
        self._timeout = timeout
        self._root = root
        self._places: dict[tuple[str, int, int], MetadataIndex] = {}
        self._left = False

    def locating(self, locate: Locate) -> Locate:
        """``locate``, remembering where each shared item is (requests name places)."""

        def located(index: MetadataIndex) -> StoredItem:
            item = locate(index)
            if index in self._share.owners:
                self._places[(item.path, item.offset, item.length)] = index
            return item

        return located

    def read(
        self, requests: Sequence[ReadRequest], *, thread_count: int | None = None, verify: bool
    ) -> None:
        # docstring inherited
        local: list[ReadRequest] = []
        shared: dict[int, tuple[int, ReadRequest]] = {}
        for request in requests:
            index = self._places.get((request.path, request.offset, request.length))
            if index is None:
                local.append(request)
            else:
                slot, owner = self._share.owners[index]
                shared[slot] = (owner, request)
        if not shared:
            self._reader.read(local, thread_count=thread_count, verify=verify)
            return
        segment = self._segment()
        error: BaseException | None = None
        self._left = True  # whatever happens next, this rank leaves the segment below
        try:
            segment.join()
            mine = [(slot, r) for slot, (owner, r) in shared.items() if owner == segment.rank]
            if mine:
                segment.publish(mine, self._reader, thread_count, verify)
            if local:
                self._reader.read(local, thread_count=thread_count, verify=verify)
            threads: int = thread_count or int(getattr(self._reader, "read_threads", 2))
            segment.take(shared, threads, verify, self._timeout)
        except BaseException as err:
            error = err
            raise
        finally:
            segment.leave(error)

    def abandon(self, error: BaseException) -> None:
        """Say that this rank failed before it read (its plan could not be resolved, say),
        so that peers waiting for its items fail now instead of at the timeout."""
        if self._left or not self._share.owners:
            return
        self._left = True
        segment = self._segment()
        with contextlib.suppress(OSError):
            segment.join()
        segment.leave(error)

    def _segment(self) -> _Segment:
        folder = os.path.join(self._root, self._share.key)
        return _Segment(folder, self._share, self._timeout)


class _Segment:
    """One host's folder of published items for one load."""

    def __init__(self, folder: str, share: SharePlan, timeout: float) -> None:
        self.folder = folder
        self.rank = share.rank
        self._group = share.group
        self._timeout = timeout

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def slot(self, slot: int) -> str:
        return self._path(f"item-{slot}")

    def join(self) -> None:
        try:
            os.mkdir(self.folder, mode=0o700)
        except FileExistsError:
            pass
        else:  # the first rank of this load on the host clears what earlier loads left
            remove_stale_segments(os.path.dirname(self.folder), self.folder, self._timeout)
        self._mark(f"pid-{self.rank}", str(os.getpid()))

    def _mark(self, name: str, text: str) -> None:
        temp = self._path(f".{name}.tmp")
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temp, self._path(name))

    def publish(
        self,
        owned: Sequence[tuple[int, ReadRequest]],
        reader: RequestReader,
        thread_count: int | None,
        verify: bool,
    ) -> None:
        """Read the ``owned`` items from storage, whole, and publish each in the segment.

        Items are staged in one private buffer, at most :data:`_STAGE` bytes at a time (one
        larger item alone), and written with ``pwrite``: measured faster than reading into
        a mapping of the new file (reserving and faulting in its pages), and a full
        ``/dev/shm`` is then an error, where a write to a mapping of it would kill the
        process.
        """
        batches = _batches(owned)
        # One buffer for every batch: its pages are faulted in once, not once per batch.
        stage = torch.empty(max(_span(b) for b in batches), dtype=torch.uint8)
        for batch in batches:
            views, start = [], 0
            for _, request in batch:
                views.append(stage[start : start + request.length])
                start = _aligned(start + request.length)
            staged = [
                _whole(request, view.view(request.dtype).view(request.chunk_sizes))
                for (_, request), view in zip(batch, views, strict=True)
            ]
            reader.read(staged, thread_count=thread_count, verify=verify)
            for (slot, _), view in zip(batch, views, strict=True):
                self._write(slot, memoryview(view.numpy()))  # type: ignore[arg-type]

    def _write(self, slot: int, data: memoryview) -> None:
        temp = self._path(f".item-{slot}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], done)
        except OSError as err:
            raise storage_fault(err, temp, "publishing a shared read") from err
        finally:
            os.close(fd)
        os.replace(temp, self.slot(slot))

    def take(
        self,
        shared: dict[int, tuple[int, ReadRequest]],
        thread_count: int,
        verify: bool,
        timeout: float,
    ) -> None:
        """Fill the targets of the ``shared`` requests (slot -> owner, request) from the
        segment as their items are published, checking them as reads from storage are."""
        pending = dict(shared)
        deadline = time.monotonic() + timeout
        delay = _POLL_FIRST
        opener = functools.partial(LocalFile, root=self.folder)
        while pending:
            ready = [slot for slot in pending if os.path.exists(self.slot(slot))]
            if ready:
                requests = [_from_slot(pending.pop(s)[1], self.slot(s)) for s in ready]
                threads = thread_count if sum(r.length for r in requests) >= _SMALL else 1
                read_into(requests, thread_count=threads, verify=verify, opener=opener)
                delay = _POLL_FIRST
                continue
            self._check_peers(pending)
            if time.monotonic() > deadline:
                raise SharedReadTimeoutError(self._waiting(pending, f"at most {timeout} s", "no"))
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def _waiting(self, pending: dict[int, tuple[int, ReadRequest]], expected: str, got: str) -> str:
        slot, (owner, request) = next(iter(pending.items()))
        return (
            f"{self.folder}: rank {self.rank} waiting for item {request.label} of "
            f"{request.path} (slot {slot}) from rank {owner}: expected it published within "
            f"{expected}, found {got} ({len(pending)} items still missing)"
        )

    def _check_peers(self, pending: dict[int, tuple[int, ReadRequest]]) -> None:
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            raise SharedReadError(
                self._waiting(pending, "it", "the segment removed: a rank timed out")
            ) from None
        for name in names:
            if name.startswith("failed-"):
                message = self._read(name, _MAX_MESSAGE) or "(no message)"
                raise SharedReadError(
                    self._waiting(pending, "it", f"rank {name[7:]} failed: {message}")
                )
        for owner in {owner for owner, _ in pending.values()}:
            if self._dead(owner):
                raise SharedReadError(self._waiting(pending, "it", f"rank {owner}'s process gone"))

    def _read(self, name: str, limit: int) -> str | None:
        return read_mark(self._path(name), limit)

    def _dead(self, rank: int) -> bool:
        """Whether ``rank`` joined and its process is gone (a rank not yet there is alive)."""
        return process_gone(self._read(f"pid-{rank}", PID_CHARS))

    def leave(self, error: BaseException | None) -> None:
        """Leave ``done-<rank>`` or ``failed-<rank>`` (the error); the member that finds
        every member done, failed or dead removes the segment. A rank that timed out
        removes it at once: a member has been missing for that long."""
        with contextlib.suppress(OSError):  # a segment removed already needs nothing more
            if error is None:
                self._mark(f"done-{self.rank}", "")
            else:
                self._mark(f"failed-{self.rank}", f"{type(error).__name__}: {error}")
        if isinstance(error, SharedReadTimeoutError):
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        try:
            names = set(os.listdir(self.folder))
        except OSError:
            return
        if all(
            f"done-{rank}" in names or f"failed-{rank}" in names or self._dead(rank)
            for rank in self._group
        ):
            shutil.rmtree(self.folder, ignore_errors=True)


def _aligned(offset: int) -> int:
    """``offset`` rounded up to :data:`_ALIGN`: every dtype can view a staged item there."""
    return -(-offset // _ALIGN) * _ALIGN


def _span(batch: Sequence[tuple[int, ReadRequest]]) -> int:
    """The staging bytes ``batch`` takes, each item at an aligned start."""
    return sum(_aligned(request.length) for _, request in batch)


def _batches(
    owned: Sequence[tuple[int, ReadRequest]],
) -> list[list[tuple[int, ReadRequest]]]:
    """``owned`` in order, cut into batches of at most :data:`_STAGE` bytes (or one item)."""
    batches: list[list[tuple[int, ReadRequest]]] = []
    size = _STAGE
    for entry in owned:
        if size + _aligned(entry[1].length) > _STAGE:
            batches.append([])
            size = 0
        batches[-1].append(entry)
        size += _aligned(entry[1].length)
    return batches


def _whole(request: ReadRequest, dest: torch.Tensor) -> ReadRequest:
    """``request`` reading its whole item into ``dest`` instead of its own targets."""
    return dataclasses.replace(request, targets=(Target(Box.full(request.chunk_sizes), dest),))


def _from_slot(request: ReadRequest, path: str) -> ReadRequest:
    """``request`` reading its item from the published copy at ``path``."""
    return dataclasses.replace(request, path=path, offset=0)
