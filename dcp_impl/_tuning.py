"""The engine's tuning: I/O thresholds, the hashing step and test switches, in one record.

The engine (:mod:`dcp_impl.transfer`) reads :func:`current` when a read starts, never a module
global, so that tests steer it through :func:`tuned` (public as ``dcp_impl.testing.tuned``)
instead of patching private globals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Tuning", "DEFAULT", "current", "tuned"]


def _iov_max() -> int:
    try:
        value = os.sysconf("SC_IOV_MAX")
    except (ValueError, OSError):
        return 1024
    return value if value > 0 else 1024


@dataclass(frozen=True, slots=True)
class Tuning:
    """How the engine reads; the defaults are what every load uses."""

    min_run: int = 4096
    """Runs shorter than this are read through a staging buffer instead: one syscall buffer
    and one Python slice per run cost more than reading the span once and copying it out
    (where the two break even: perf/README.md, "Measurements behind dcp_impl's I/O
    constants")."""
    max_gap: int = 1 << 20
    """Skipped bytes above this end a ``preadv`` call instead of being read into scratch."""
    iov_max: int = dataclasses.field(default_factory=_iov_max)
    """Buffers one ``preadv`` call accepts (1024 on Linux)."""
    write_step: int = 8 << 20
    """An item's bytes go to the store and to a hashing thread in steps this big (a whole
    number of checksum pieces)."""
    stage_all: bool = False
    """Send every target through the staging buffers (so that CPU tests exercise the CUDA
    path)."""
    copier: Callable[[], Any] | None = None
    """Makes the device copier of each reading thread (a ``DeviceCopier``), in place of the
    real one (for the same tests)."""


DEFAULT = Tuning()
_lock = threading.Lock()
_current = DEFAULT


def current() -> Tuning:
    """The tuning reads started now use."""
    return _current


@contextlib.contextmanager
def tuned(**changes: Any) -> Iterator[Tuning]:
    """Within the block, reads (on every thread) use the current tuning with ``changes``."""
    global _current
    with _lock:
        before = _current
        _current = dataclasses.replace(before, **changes)
    try:
        yield _current
    finally:
        with _lock:
            _current = before
