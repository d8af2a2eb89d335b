"""Writing items: the :class:`ItemWriter` base every store's data-file writer builds on, and
the row-major bytes of a tensor."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Protocol, Self

import torch

from dcp_impl import _tuning, dtypes
from dcp_impl.errors import UnsupportedError
from dcp_impl.transfer._checksum import PIECE_SIZE, write_hashed

__all__ = [
    "StoredRange",
    "ItemWriter",
    "tensor_bytes",
    "byte_view",
]


@dataclass(frozen=True, slots=True)
class StoredRange:
    """Where an :class:`ItemWriter` put one item: bytes ``[offset, offset + length)``, and
    their checksum text (one digest per piece: :func:`~dcp_impl.transfer.piece_checksum`)."""

    offset: int
    length: int
    checksum: str


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The logical values of ``tensor`` as row-major bytes (copied only when necessary).

    Any device, strides, conjugate or negative view; the result is a flat byte view of a
    contiguous CPU tensor, itself valid while the returned view is alive. A tensor without
    elements gives an empty view whatever its strides.
    """
    if tensor.layout != torch.strided:
        raise UnsupportedError(f"tensor layout {tensor.layout} cannot be stored: expected strided")
    dtypes.by_torch(tensor.dtype)  # unknown dtypes are an error, never a guess
    if tensor.numel() == 0:
        return memoryview(b"")  # no bytes to view: skip the device copy and the stride rules
    return byte_view(dtypes.dense(tensor.detach().resolve_conj().resolve_neg().to("cpu")))


def byte_view(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, sharing its memory."""
    flat = tensor.detach().reshape(-1)
    if flat.numel() <= 1:
        # A contiguous tensor of at most one element may carry any stride; view() needs 1.
        flat = flat.as_strided((flat.numel(),), (1,))
    return flat.view(torch.uint8).numpy().data.cast("B")


class ItemWriter(Protocol):
    """Appends items to one new stored file, one :class:`StoredRange` per item; use as a
    context manager: leaving the ``with`` block normally closes (commits) the file, leaving it
    by an exception discards it. Each store's writer subclasses it and stores the bytes
    (:meth:`_put`); the abstract methods are what it implements.

    A ``typing.Protocol``, as the source protocols are (``Source``): the engine asks for
    these methods, not for an ancestor; abstract methods (``abc.abstractmethod``, which
    protocols honour) make a subclass that misses one fail when it is made, not when a save
    is half written. The methods with bodies are what explicit subclasses inherit.

    Each item's checksum has one digest per piece of at most ``piece_size`` bytes
    (``PIECE_SIZE``, 1 MiB, by default; :func:`~dcp_impl.transfer.piece_size_for`), so that a
    read of part of an item checks only the pieces it touches."""

    path: str
    """The file, as read requests and error messages name it."""
    piece_size: int
    """The most bytes one checksum digest covers."""
    _offset: int

    def __init__(self, path: str, *, piece_size: int = PIECE_SIZE) -> None:
        self.path = path
        self.piece_size = piece_size
        self._offset = 0

    def write_tensor(self, tensor: torch.Tensor) -> StoredRange:
        """Append the logical values of ``tensor`` (see :func:`tensor_bytes`)."""
        return self.write_bytes(tensor_bytes(tensor))

    def write_bytes(self, data: bytes | memoryview) -> StoredRange:
        """Append raw bytes."""
        self._require_open()
        view = memoryview(data).cast("B")
        step = _tuning.current().write_step
        digests = write_hashed(view, self._put, self.piece_size, step=step)
        stored = StoredRange(self._offset, len(view), digests)
        self._offset += len(view)
        return stored

    @abc.abstractmethod
    def _require_open(self) -> None:
        """Raise ``ValueError`` when the file is closed (a write after close)."""

    @abc.abstractmethod
    def _put(self, piece: memoryview) -> None:
        """Store the next ``piece`` of the file's bytes."""

    @abc.abstractmethod
    def close(self) -> None:
        """Finish the file: after this, readers see all of it."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Close and remove the file (best effort: never raises for a file already gone)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()
