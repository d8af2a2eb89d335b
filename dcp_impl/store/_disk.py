"""Local files, the place of :class:`~dcp_impl.store.LocalStore` and of shared reads: a
:class:`LocalFile` source (``os.preadv``, mapped in memory), the data-file writer
(:class:`DataFileWriter`) and the atomic commit of a small file (:func:`atomic_write`)."""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets

from dcp_impl.store._files import open_regular, storage_fault
from dcp_impl.transfer import PIECE_SIZE, ItemWriter

__all__ = ["LocalFile", "DataFileWriter", "atomic_write", "fsync_dir", "preadv_all"]


class LocalFile:
    """A local file, read with ``os.preadv`` (vectored, positional: safe across threads).

    Opened by :func:`~dcp_impl.store.open_regular`: only a regular file, and with ``root``
    only one inside that folder (a link out of the checkpoint is refused).
    :meth:`mapped` maps it copy-on-write (so tensors may wrap it without a read-only
    warning; nothing writes to it). A file truncated by another process while it is mapped
    makes later accesses past its new end fault (SIGBUS), as with every mmap reader.
    """

    def __init__(self, path: str, root: str | os.PathLike[str] | None = None) -> None:
        self._fd = open_regular(path, root=root)
        self._map: mmap.mmap | None = None
        self._unmappable = False

    def mapped(self) -> memoryview | None:
        # docstring inherited
        if self._map is None:
            if self._unmappable:
                return None
            if os.fstat(self._fd).st_size == 0:
                return memoryview(b"")  # an empty file cannot be mapped
            try:
                self._map = mmap.mmap(self._fd, 0, access=mmap.ACCESS_COPY)
            except (OSError, ValueError):  # some FUSE and special file systems refuse mmap
                self._unmappable = True
                return None
        return memoryview(self._map)

    def preadv(self, buffers: list[memoryview], offset: int) -> int:
        # docstring inherited
        return preadv_all(self._fd, buffers, offset)

    def close(self) -> None:
        # docstring inherited
        if self._map is not None:
            # Views still alive keep the mapping open; it is then unmapped when they go.
            with contextlib.suppress(BufferError):
                self._map.close()
        os.close(self._fd)


def preadv_all(fd: int, buffers: list[memoryview], offset: int) -> int:
    """Fill ``buffers`` in order from file ``offset``; the bytes read, fewer only at end of file.

    ``preadv`` may stop early (signals, the kernel's per-call limit); this resumes it.
    """
    done = 0
    while buffers:
        count = os.preadv(fd, buffers, offset + done)
        if count == 0:
            break
        done += count
        filled = 0
        while filled < len(buffers) and count >= len(buffers[filled]):
            count -= len(buffers[filled])
            filled += 1
        buffers = buffers[filled:]
        if count:
            buffers[0] = buffers[0][count:]
    return done


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
