"""Host staging buffers and the copies out of them into (possibly CUDA) destinations."""

from __future__ import annotations

import mmap
from collections.abc import Callable
from typing import Protocol

import torch

from dcp_impl.dtypes import copy_bits
from dcp_impl.transfer._budget import Budget

__all__ = ["DeviceCopier", "SyncCopier", "CudaCopier", "Staging"]


class DeviceCopier(Protocol):
    """Copies staged host bytes into destinations, possibly asynchronously."""

    def copy(self, dest: torch.Tensor, src: torch.Tensor) -> object:
        """Start ``dest.copy_(src)``; return a token that :meth:`wait` accepts."""
        ...

    def wait(self, token: object) -> None:
        """Block until the copy that returned ``token`` no longer reads its source."""
        ...

    def synchronize(self) -> None:
        """Block until every copy started so far is complete."""
        ...


class SyncCopier:
    """A plain ``copy_``: complete when it returns."""

    def copy(self, dest: torch.Tensor, src: torch.Tensor) -> object:
        # docstring inherited
        copy_bits(dest, src)
        return None

    def wait(self, token: object) -> None:
        # docstring inherited
        pass

    def synchronize(self) -> None:
        # docstring inherited
        pass


class CudaCopier:
    """Non-blocking host-to-device copies on one side stream per reading thread and device."""

    def __init__(self, device: torch.device) -> None:
        self._stream = torch.cuda.Stream(device=device)

    def copy(self, dest: torch.Tensor, src: torch.Tensor) -> object:
        # docstring inherited
        # dest was allocated on the caller's stream; order our copy after its pending work.
        self._stream.wait_stream(torch.cuda.current_stream(dest.device))
        with torch.cuda.stream(self._stream):
            copy_bits(dest, src, non_blocking=True)
            dest.record_stream(self._stream)
            event = torch.cuda.Event()
            event.record(self._stream)
        return event

    def wait(self, token: object) -> None:
        # docstring inherited
        if isinstance(token, torch.cuda.Event):
            token.synchronize()

    def synchronize(self) -> None:
        # docstring inherited
        self._stream.synchronize()


class Staging:
    """Two reusable host buffers: one is filled while the other's copies are in flight.

    With a :class:`~dcp_impl.transfer._budget.Budget`, every buffer is held from it while it
    exists: a buffer that must grow is freed first, and one that would wait for the budget
    first frees everything this thread holds idle (``drop_idle``), copies waited for. Host
    (unpinned) buffers then use one slot (their copies are complete when made) and are
    mapped memory of their own, given back to the system when freed: from the C heap, freed
    buffers stay resident (glibc keeps them for reuse, per thread). Pinned buffers come from
    torch's caching host allocator, which also keeps freed blocks: the budget bounds those in
    use.
    """

    def __init__(
        self, pin: bool, budget: Budget | None = None, drop_idle: Callable[[], None] | None = None
    ) -> None:
        self._pin = pin
        self._budget = budget
        self._drop_idle = drop_idle or self.drop
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._in_flight: list[list[tuple[DeviceCopier, object]]] = [[], []]
        self._next = 0
        self._slots = 1 if budget is not None and not pin else 2

    def take(self, nbytes: int) -> tuple[int, torch.Tensor]:
        """A buffer of ``nbytes`` that no pending copy still reads, and its slot."""
        slot, self._next = self._next, (self._next + 1) % self._slots
        self._wait(slot)
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < nbytes:
            buffer = None  # the last reference: the old buffer is freed before the new exists
            self._free(slot)
            size = max(nbytes, 1)
            if self._budget is not None:
                self._budget.acquire(size, self._drop_idle)
            buffer = self._allocate(size)
            self._buffers[slot] = buffer
        return slot, buffer[:nbytes]

    def used_by(self, slot: int, copier: DeviceCopier, token: object) -> None:
        """Record a copy that reads the buffer of ``slot``."""
        self._in_flight[slot].append((copier, token))

    def drop(self) -> None:
        """Free both buffers once their copies are done (and give their bytes back)."""
        for slot in (0, 1):
            self._wait(slot)
            self._free(slot)

    def _allocate(self, size: int) -> torch.Tensor:
        if self._budget is None or self._pin:
            return torch.empty(size, dtype=torch.uint8, pin_memory=self._pin)
        # The tensor keeps the mapping alive; it is unmapped when the last view goes.
        return torch.frombuffer(mmap.mmap(-1, size), dtype=torch.uint8)

    def _wait(self, slot: int) -> None:
        for copier, token in self._in_flight[slot]:
            copier.wait(token)
        self._in_flight[slot].clear()

    def _free(self, slot: int) -> None:
        buffer, self._buffers[slot] = self._buffers[slot], None
        if buffer is not None and self._budget is not None:
            self._budget.release(buffer.numel())
