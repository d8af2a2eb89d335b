"""The commit lock: one save at a time runs its commit step on a location.

A save's commit step (check that its files are all there, replace the commit point, remove
superseded files) runs while it holds ``.dcp-commit.lock``, a small file created with
:meth:`Store.create_new` (``O_EXCL`` locally, a conditional PUT where the object store has
one). The file records who holds it (host, pid, time). A contender waits while the lock is
live and raises :class:`~dcp_impl.errors.ConcurrentSaveError` after ``wait_s``. A lock is
stale, and is broken, when its holder is a process of this host that no longer runs, when it
is older than ``stale_after_s``, or when it is unreadable (docs/format.md, "Concurrent
saves").
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator

from dcp_impl.errors import ConcurrentSaveError
from dcp_impl.store._base import Store

__all__ = [
    "HeldLock",
    "LOCK_NAME",
    "STALE_AFTER_S",
    "WAIT_S",
    "commit_lock",
    "older_save",
    "save_stamp",
    "stamp_of",
]

LOCK_NAME = ".dcp-commit.lock"
STALE_AFTER_S = 300.0
"""A lock this old is stale whoever holds it: a commit step takes milliseconds to seconds,
and a longer one (many large objects to move) refreshes its lock every minute."""
WAIT_S = 60.0
"""How long a contender waits for a live lock before it gives up loudly."""
_POLL_S = 0.01
_MAX_LOCK_BYTES = 4096


def save_stamp() -> str:
    """A new save's id: 16 hex digits of the wall clock (ns) then 16 random ones.

    Ids sort by start time (across hosts, as far as their clocks agree), which is how a
    committing save tells the files of saves that started before it from newer ones."""
    return f"{time.time_ns():016x}{uuid.uuid4().hex[:16]}"


def stamp_of(save_id: str) -> int:
    """When the save of ``save_id`` (from :func:`save_stamp`) started, in ns."""
    return int(save_id[:16], 16)


_FUTURE_NS = 24 * 3600 * 10**9


def older_save(save_id: str, started: int) -> bool:
    """Whether the save of ``save_id`` started before ``started`` (ns), so that a save that
    started at ``started`` and committed may remove its files. An id that is no plausible
    start time (more than a day ahead of this clock: the random ids of dcp_impl before
    save stamps) counts as older."""
    stamp = stamp_of(save_id)
    return stamp < started or stamp > time.time_ns() + _FUTURE_NS


class HeldLock:
    """The commit lock, held: :meth:`refresh` during a long commit step keeps it live."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._token = uuid.uuid4().hex
        self.record = self._record()
        self._since = time.monotonic()

    def _record(self) -> bytes:
        doc = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        return json.dumps({**doc, "token": self._token}).encode()

    def refresh(self) -> None:
        """Rewrite the lock's time if it is a minute old, so that a commit step longer than
        :data:`STALE_AFTER_S` (moving many large objects) is never taken for a dead one."""
        if time.monotonic() - self._since < _REFRESH_S:
            return
        record = self._record()
        try:
            self._store.commit(LOCK_NAME, record, sync=False)
        except OSError:
            return  # best effort: the commit step goes on, its lock merely ages
        self.record, self._since = record, time.monotonic()


_REFRESH_S = 60.0


@contextlib.contextmanager
def commit_lock(
    store: Store, *, wait_s: float = WAIT_S, stale_after_s: float = STALE_AFTER_S
) -> Iterator[HeldLock]:
    """Hold the commit lock of ``store`` for the body (see the module docstring)."""
    lock = HeldLock(store)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            store.create_new(LOCK_NAME, lock.record)
            break
        except FileExistsError:
            held = _read(store)
            if held is None:
                continue  # released since: try again at once
            if _is_stale(held, stale_after_s):
                _break(store, held)
                continue
            if time.monotonic() > deadline:
                raise ConcurrentSaveError(
                    f"{store.path(LOCK_NAME)}: expected to take the commit lock within "
                    f"{wait_s:g} s, found it held by another save ({held.decode(errors='replace')})"
                ) from None
            time.sleep(_POLL_S)
    try:
        yield lock
    finally:
        if _read(store) == lock.record:  # never remove a lock that was broken and taken since
            store.remove([LOCK_NAME])


def _read(store: Store, name: str = LOCK_NAME) -> bytes | None:
    # One ranged read (one request on an object store); a lock is a few dozen bytes.
    try:
        data = store.read_range(name, 0, _MAX_LOCK_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError:
        return b""  # unreadable: not a lock anyone holds properly
    return data if len(data) <= _MAX_LOCK_BYTES else b""


def _is_stale(held: bytes, stale_after_s: float) -> bool:
    try:
        doc = json.loads(held)
        host, pid, since = doc["host"], int(doc["pid"]), float(doc["time"])
    except (ValueError, KeyError, TypeError):
        return True
    if abs(time.time() - since) > stale_after_s:  # a clock far ahead is no excuse either
        return True
    return host == socket.gethostname() and not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except (OverflowError, ValueError):
        return False
    return True


def _break(store: Store, held: bytes) -> None:
    """Remove the stale lock ``held``, unless it was replaced meanwhile."""
    aside = f"{LOCK_NAME}.{uuid.uuid4().hex}.stale"
    try:
        store.rename(LOCK_NAME, aside)
    except FileNotFoundError:
        return  # another contender broke it first
    moved = _read(store, aside) or b""
    store.remove([aside])
    if moved != held:
        # Two contenders judged the same lock stale and the other one already took a fresh
        # lock, which this rename moved aside: put it back (it is the live one).
        with contextlib.suppress(FileExistsError):
            store.create_new(LOCK_NAME, moved)
