"""Random access to the bytes of one stored file, whatever holds it.

:func:`dcp_impl._io.read_into` asks a :class:`Source` for byte ranges and never touches a
file itself; an :data:`Opener` makes a source from a path. :class:`LocalFile` reads local
files through ``os.preadv``; other stores (object stores through fsspec) provide their own
opener, and everything above the bytes (planning runs, staging, verification, device
copies) stays shared.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from dcp_impl._io._runs import preadv_all

__all__ = ["Source", "Opener", "LocalFile"]


class Source(Protocol):
    """One open stored file."""

    def preadv(self, buffers: list[memoryview], offset: int) -> int:
        """Fill ``buffers`` in order from byte ``offset``; return the bytes read, fewer
        only where the file ends."""
        ...

    def close(self) -> None:
        """Release the file."""
        ...


Opener = Callable[[str], Source]
"""Opens the stored file at a path; raises ``FileNotFoundError`` when there is none."""


class LocalFile:
    """A local file, read with ``os.preadv`` (vectored, positional: safe across threads)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY)

    def preadv(self, buffers: list[memoryview], offset: int) -> int:
        # docstring inherited
        return preadv_all(self._fd, buffers, offset)

    def close(self) -> None:
        # docstring inherited
        os.close(self._fd)
