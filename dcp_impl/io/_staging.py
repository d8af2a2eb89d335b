"""Host staging buffers and the copies out of them into (possibly CUDA) destinations."""

from __future__ import annotations

from typing import Protocol

import torch

from dcp_impl.dtypes import copy_bits

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
    """Two reusable host buffers: one is filled while the other's copies are in flight."""

    def __init__(self, pin: bool) -> None:
        self._pin = pin
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._in_flight: list[list[tuple[DeviceCopier, object]]] = [[], []]
        self._next = 0

    def take(self, nbytes: int) -> tuple[int, torch.Tensor]:
        """A buffer of ``nbytes`` that no pending copy still reads, and its slot."""
        slot, self._next = self._next, 1 - self._next
        for copier, token in self._in_flight[slot]:
            copier.wait(token)
        self._in_flight[slot].clear()
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < nbytes:
            buffer = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=self._pin)
            self._buffers[slot] = buffer
        return slot, buffer[:nbytes]

    def used_by(self, slot: int, copier: DeviceCopier, token: object) -> None:
        """Record a copy that reads the buffer of ``slot``."""
        self._in_flight[slot].append((copier, token))
