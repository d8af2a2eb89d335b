"""How one target of a stored item is read: the choice among five strategies, made in one
place (:func:`choose`) and carried out by the reader (``_read._Reader._read_spans``).

The order is the preference (docs/architecture.md, "How bytes reach a destination"):

1. ``SPAN``: the sub-box is one exact byte span and the destination takes raw bytes: one
   read straight into it.
2. ``DEVICE``: one exact span into device memory, from a source that fills device memory
   itself (GPU-direct storage).
3. ``MAPPED``: several runs, or a destination that needs a copy: copied out of the file
   mapped in memory (only the sub-box's pages are touched).
4. ``RUNS``: the file cannot be mapped and the destination takes raw bytes in runs long
   enough (``Tuning.min_run``): vectored reads straight into the destination's runs.
5. ``STAGED``: anything else: the enclosing span is read into a staging buffer and the
   sub-box copied out.

The facts that cost something (opening the source, mapping the file, planning runs) are asked
of a :class:`Probe` only when the choice depends on them, in this order.

A public module (not re-exported by :mod:`dcp_impl.transfer`) for maintainers of the engine
and its tests: the choice is tested on its own (tests/test_read_strategy.py), and a store's
author can see which path a read of theirs takes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import torch

from dcp_impl.transfer._runs import Runs
from dcp_impl.transfer._sources import DeviceReadable

__all__ = ["Strategy", "Probe", "Lazy", "LazyProbe", "choose"]


class Strategy(enum.Enum):
    """The five ways a target is filled (see the module's docstring)."""

    SPAN = "one exact span read straight into the destination"
    DEVICE = "one exact span filled in device memory by the source"
    MAPPED = "copied out of the mapped file"
    RUNS = "vectored reads straight into the destination's runs"
    STAGED = "the enclosing span read into a staging buffer, then copied out"


class Probe(Protocol):
    """The facts about one target that cost something to learn."""

    def device_readable(self) -> bool:
        """Whether the source fills this (device) destination itself."""
        ...

    def mapped(self) -> bool:
        """Whether the item's bytes are viewable in place (the file is mapped)."""
        ...

    def run_length(self) -> int:
        """The length in bytes of each run of contiguous bytes of the sub-box."""
        ...


def choose(*, direct: bool, exact: bool, min_run: int, probe: Probe) -> Strategy:
    """The strategy for one target.

    Args:
        direct: the destination takes the stored bytes as they are (a contiguous CPU tensor
            of the stored dtype, and staging is not forced).
        exact: the sub-box is one exact byte span of the item.
        min_run: runs shorter than this are staged (``Tuning.min_run``).
        probe: the costly facts, asked lazily in the order above.
    """
    if direct and exact:
        return Strategy.SPAN
    if exact and probe.device_readable():
        return Strategy.DEVICE
    if probe.mapped():
        return Strategy.MAPPED
    if direct and probe.run_length() >= min_run:
        return Strategy.RUNS
    return Strategy.STAGED


T = TypeVar("T")


class Lazy(Generic[T]):
    """A value computed on first use, then kept (the reader's probe answers and then uses
    the same source, mapping and runs)."""

    def __init__(self, compute: Callable[[], T]) -> None:
        self._compute = compute
        self._done = False
        self._value: T | None = None

    def get(self) -> T:
        """The value, computed once."""
        if not self._done:
            self._value = self._compute()
            self._done = True
        return self._value  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class LazyProbe:
    """The reader's :class:`Probe`: each fact is computed on first use and kept for the
    strategy chosen (the device source, the item's bytes in the mapping, the runs)."""

    device: Lazy[DeviceReadable | None]
    mapping: Lazy[torch.Tensor | None]
    runs: Lazy[Runs]

    def device_readable(self) -> bool:
        # docstring inherited
        return self.device.get() is not None

    def mapped(self) -> bool:
        # docstring inherited
        return self.mapping.get() is not None

    def run_length(self) -> int:
        # docstring inherited
        return self.runs.get().length
