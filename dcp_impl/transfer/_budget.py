"""A cap on the host memory a load holds in flight: the buffers it allocates beyond the
destinations it fills (staging and coalesced spans, scratch, the copies a store's reads
make before scattering them).

:class:`Budget` hands out bytes first come, first served: an acquisition waits until the
bytes held plus its own fit the cap. One larger than the cap waits until nothing is held
(beside the fixed :meth:`~Budget.reserve` share) and then runs alone, so the bytes held
never exceed ``max(cap, reserved + largest buffer)``: the cap plus one buffer at most. A
thread about to wait first gives back what it holds idle (its ``before_wait``), so threads
that wait hold nothing and every wait ends.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from dcp_impl.errors import InvalidOptionError

if TYPE_CHECKING:
    from dcp_impl.transfer._sources import Source

__all__ = [
    "Scratch",
    "Budget",
    "MIN_INFLIGHT_BYTES",
    "SLICE_MIN",
    "check_max_inflight",
    "plan_threads",
    "slices",
    "sliced_preadv",
]

MIN_INFLIGHT_BYTES = 1 << 20
"""The smallest cap accepted: below it every read would be cut into slivers."""
SLICE_MIN = 64 << 10
"""The smallest read a capped load asks a store for in one call."""


def check_max_inflight(owner: str, value: object) -> None:
    """Refuse a ``max_inflight_bytes`` other than None or an int >= :data:`MIN_INFLIGHT_BYTES`."""
    if value is None:
        return
    if type(value) is not int or value < MIN_INFLIGHT_BYTES:
        raise InvalidOptionError(
            f"{owner}: max_inflight_bytes expected None or an int >= {MIN_INFLIGHT_BYTES} "
            f"(1 MiB), got {value!r}"
        )


def plan_threads(cap: int, thread_count: int) -> tuple[int, int]:
    """``(threads, slice)`` for a load capped at ``cap``: each thread reserves one slice for
    the copy a store may make of a read (object stores return bytes, then scatter them), a
    third of the cap in all, leaving two thirds for the two staging buffers of each thread."""
    threads = max(1, min(thread_count, cap // (3 * SLICE_MIN)))
    return threads, max(SLICE_MIN, cap // (3 * threads))


class Budget:
    """Bytes of host memory under a cap, shared by a load's reading threads."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._held = 0
        self._reserved = 0
        self._peak = 0
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def held(self) -> int:
        """Bytes held now."""
        return self._held

    @property
    def peak(self) -> int:
        """The most bytes held at once so far."""
        return self._peak

    @staticmethod
    @contextlib.contextmanager
    def reserving(budget: Budget | None, nbytes: int) -> Iterator[None]:
        """:meth:`reserve` ``nbytes`` of ``budget`` (if any) for the block, then give it back."""
        if budget is None:
            yield
            return
        budget.reserve(nbytes)
        try:
            yield
        finally:
            budget.unreserve()

    def reserve(self, nbytes: int) -> None:
        """Hold ``nbytes`` now, without waiting: the fixed share a load sets aside before
        its threads start (it must fit the cap)."""
        with self._changed:
            assert self._held + nbytes <= self.cap, "a reservation must fit the cap"
            self._reserved += nbytes
            self._grant(nbytes)

    def acquire(self, nbytes: int, before_wait: Callable[[], None] | None = None) -> None:
        """Hold ``nbytes`` more, waiting for them in turn; ``before_wait`` runs (once, with
        no lock held) before this thread would wait, to give back what it holds idle."""
        if nbytes <= 0:
            return
        ticket = object()
        with self._changed:
            if not self._queue and self._fits(nbytes):
                self._grant(nbytes)
                return
            self._queue.append(ticket)
        if before_wait is not None:
            before_wait()
        with self._changed:
            while self._queue[0] is not ticket or not self._fits(nbytes):
                self._changed.wait()
            self._queue.popleft()
            self._grant(nbytes)
            self._changed.notify_all()  # the next in line may fit as well

    def release(self, nbytes: int) -> None:
        """Give back ``nbytes`` acquired."""
        if nbytes <= 0:
            return
        with self._changed:
            assert nbytes <= self._held - self._reserved, "released more than acquired"
            self._held -= nbytes
            self._changed.notify_all()

    def unreserve(self) -> None:
        """Give back what :meth:`reserve` set aside (the load's threads are done)."""
        with self._changed:
            self._held -= self._reserved
            self._reserved = 0
            self._changed.notify_all()

    def _fits(self, nbytes: int) -> bool:
        # Alone: nothing acquired besides the fixed reservations, however large nbytes is.
        return self._held + nbytes <= self.cap or self._held == self._reserved

    def _grant(self, nbytes: int) -> None:
        self._held += nbytes
        self._peak = max(self._peak, self._held)


def slices(buffers: list[memoryview], limit: int) -> Iterator[tuple[int, list[memoryview]]]:
    """``buffers`` cut into consecutive groups of at most ``limit`` bytes, each with its
    offset from the start of the first buffer (buffers longer than ``limit`` are split)."""
    group: list[memoryview] = []
    start = size = 0
    for buffer in buffers:
        view = buffer if buffer.format == "B" else buffer.cast("B")
        while len(view):
            take = min(len(view), limit - size)
            group.append(view[:take])
            view = view[take:]
            size += take
            if size == limit:
                yield start, group
                start, group, size = start + size, [], 0
    if group:
        yield start, group


def sliced_preadv(source: Source, buffers: list[memoryview], offset: int, part: int) -> int:
    """``source.preadv(buffers, offset)`` as calls of at most ``part`` bytes each (a source
    that copies what it reads before scattering it holds at most ``part`` bytes more)."""
    done = 0
    for start, group in slices(buffers, part):
        count = source.preadv(group, offset + start)
        done += count
        if count < sum(len(b) for b in group):
            break
    return done


class Scratch:
    """One thread's reused buffer of garbage bytes, grown as needed; under a cap, its bytes are
    taken from the budget (``drop_idle`` frees what the thread holds idle before a wait)."""

    def __init__(self, budget: Budget | None, drop_idle: Callable[[], None]) -> None:
        self._budget = budget
        self._drop_idle = drop_idle
        self._buffer = bytearray()

    def of(self, nbytes: int) -> memoryview:
        """The buffer, at least ``nbytes`` long."""
        if len(self._buffer) < nbytes:
            self.drop()
            if self._budget is not None:
                self._budget.acquire(nbytes, self._drop_idle)
            self._buffer = bytearray(nbytes)
        return memoryview(self._buffer)[:nbytes]

    def drop(self) -> None:
        """Free the buffer (and its bytes of the budget)."""
        size, self._buffer = len(self._buffer), bytearray()
        if self._budget is not None:
            self._budget.release(size)
