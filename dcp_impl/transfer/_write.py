"""Writing: checksums, atomic commit of small files, data files appended item by item."""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from typing import Self

import torch

from dcp_impl import dtypes
from dcp_impl.errors import UnsupportedError
from dcp_impl.transfer._checksum import CHECKSUM_ALGORITHM, PIECE_SIZE, checksum, write_hashed
from dcp_impl.transfer._files import storage_fault

__all__ = [
    "CHECKSUM_ALGORITHM",
    "checksum",
    "atomic_write",
    "fsync_dir",
    "StoredRange",
    "ItemWriter",
    "DataFileWriter",
    "tensor_bytes",
    "byte_view",
]


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or file creation in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically: readers see the old file or the new one.

    The temp file lives in the same directory (``os.replace`` is atomic only within one
    file system), is created with mode 0o666 less the umask (as ``open`` creates files, so
    a shared checkpoint stays readable to whom the umask allows) and is removed if anything
    fails before the rename. No space, open-file limits and permission errors raise
    :class:`~dcp_impl.errors.StorageFaultError` naming ``path``; the old file is untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            _write_all(fd, memoryview(data).cast("B"))
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if sync:
            fsync_dir(directory)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise storage_fault(err, path, "writing") from err
        raise


@dataclass(frozen=True, slots=True)
class StoredRange:
    """Where :class:`DataFileWriter` put one item: bytes ``[offset, offset + length)``, and
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


class ItemWriter:
    """Appends items to one new stored file, one :class:`StoredRange` per item; use as a
    context manager: leaving the ``with`` block normally closes (commits) the file, leaving it
    by an exception discards it. Subclasses store the bytes (:meth:`_put`).

    Each item's checksum has one digest per ``piece_size`` bytes (``PIECE_SIZE``, 1 MiB, by
    default), so that a read of part of an item checks only the pieces it touches."""

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
        digests = write_hashed(view, self._put, self.piece_size)
        stored = StoredRange(self._offset, len(view), digests)
        self._offset += len(view)
        return stored

    def _require_open(self) -> None:
        raise NotImplementedError

    def _put(self, piece: memoryview) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file: after this, readers see all of it."""
        raise NotImplementedError

    def discard(self) -> None:
        """Close and remove the file (best effort: never raises for a file already gone)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


class DataFileWriter(ItemWriter):
    """Appends items to one new local data file.

    The file is created exclusively (an existing file is never overwritten). ``close``
    flushes and, with ``sync``, fsyncs it; leaving the ``with`` block by an exception
    removes the file instead.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, sync: bool = True, piece_size: int = PIECE_SIZE
    ) -> None:
        super().__init__(os.fspath(path), piece_size=piece_size)
        self._sync = sync
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:  # 0o666 less the umask, as ``open`` creates files
            self._fd: int | None = os.open(self.path, flags, 0o666)
        except OSError as err:
            raise storage_fault(err, self.path, "creating") from err

    def _require_open(self) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path}: write after close")

    def _put(self, piece: memoryview) -> None:
        assert self._fd is not None  # write_bytes checked it
        try:
            _write_all(self._fd, piece)
        except OSError as err:
            raise storage_fault(err, self.path, "writing") from err

    def close(self) -> None:
        """Flush (and fsync, with ``sync``) and close the file."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._sync:
                os.fsync(fd)  # a delayed-allocation file system reports no space here
        except OSError as err:
            raise storage_fault(err, self.path, "writing") from err
        finally:
            os.close(fd)

    def discard(self) -> None:
        # docstring inherited
        with contextlib.suppress(OSError):
            self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]
