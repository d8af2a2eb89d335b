"""Random access to the bytes of one stored file, whatever holds it.

:func:`dcp_impl.transfer.read_into` asks a :class:`Source` for byte ranges and never touches a
file itself; an :data:`Opener` (a store's ``opener``) makes a source from a path. The sources
live with their places in :mod:`dcp_impl.store` (``LocalFile``: ``os.preadv`` and mapped in
memory, :class:`Mappable`; ``ObjectSource``: ranged GETs); everything above the bytes
(planning runs, staging, verification, device copies) is here, shared.

The protocols are ``typing.Protocol`` s, as is :class:`~dcp_impl.transfer.ItemWriter`, with
``abc.abstractmethod`` members: a store hands the engine any object with these methods (a
source inherits nothing), and an explicit subclass that misses one fails when it is made.
Protocol rather than ``abc.ABC``: sources are duck-typed today (``isinstance`` checks of
:class:`Mappable` and :class:`DeviceReadable` are structural), which an ABC would break.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from dcp_impl.errors import CorruptCheckpointError

__all__ = [
    "Source",
    "Mappable",
    "DeviceReadable",
    "Opener",
    "OpenFiles",
    "MAX_OPEN_FILES",
]

MAX_OPEN_FILES = 32
"""Sources one reading thread keeps open at most; the least recently used is closed for the
next. Requests are read sorted by file, so a checkpoint of many files (more than the process
may open: ``ulimit -n``) is read opening each file about once per thread."""


class Source(Protocol):
    """One open stored file."""

    @abc.abstractmethod
    def preadv(self, buffers: list[memoryview], offset: int) -> int:
        """Fill ``buffers`` in order from byte ``offset``; return the bytes read, fewer
        only where the file ends."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file."""


@runtime_checkable
class Mappable(Protocol):
    """A source whose bytes can also be viewed in place, without reading them into a buffer."""

    def mapped(self) -> memoryview | None:
        """The whole file, mapped (its length is the file's size when first mapped), or
        None where this file cannot be mapped: read it instead."""
        ...


@runtime_checkable
class DeviceReadable(Protocol):
    """A source that fills device memory itself, without staging bytes in host memory
    (GPU-direct storage: cuFile, kvikio). :func:`~dcp_impl.transfer.read_into` hands it every
    contiguous non-CPU destination of the item's dtype whose bytes are one span of the file
    and that no checksum check needs on the host (``verify=False``, items without a
    checksum, partial reads under ``verify="whole"``); other device reads are staged."""

    def read_to_device(self, dest: torch.Tensor, offset: int) -> int:
        """Fill the bytes of the contiguous device tensor ``dest`` from file ``offset``,
        complete when this returns; return the bytes read, fewer only where the file ends."""
        ...


Opener = Callable[[str], Source]
"""Opens the stored file at a path; raises ``FileNotFoundError`` when there is none."""


class OpenFiles:
    """One reading thread's open sources and their mappings: at most
    :data:`MAX_OPEN_FILES`, the least recently used closed first."""

    def __init__(self, opener: Opener) -> None:
        self._opener = opener
        self._sources: OrderedDict[str, Source] = OrderedDict()
        self._maps: dict[str, memoryview | None] = {}

    def open(self, path: str, label: str) -> Source:
        """The open source of ``path`` (``label`` names the item wanting it in errors)."""
        source = self._sources.get(path)
        if source is not None:
            self._sources.move_to_end(path)
            return source
        if len(self._sources) >= MAX_OPEN_FILES:
            oldest, closing = self._sources.popitem(last=False)
            self._maps.pop(oldest, None)  # the mapping's view goes before its source closes
            closing.close()
        try:
            source = self._opener(path)
        except FileNotFoundError as err:
            raise CorruptCheckpointError(f"{path}: data file of item {label} is missing") from err
        self._sources[path] = source
        return source

    def mapped(self, path: str, label: str) -> memoryview | None:
        """The whole of ``path`` mapped, mapped once; None where its source does not map."""
        whole = self._maps.get(path, ...)
        if whole is ...:
            source = self.open(path, label)
            whole = self._maps[path] = source.mapped() if isinstance(source, Mappable) else None
        return whole

    def close(self) -> None:
        """Close every source, their mappings' views first."""
        self._maps.clear()
        for source in self._sources.values():
            source.close()
        self._sources.clear()
