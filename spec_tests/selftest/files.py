"""Broken backends whose bug is in how the reader opens stored files: it trusts that a file
is what the checkpoint says it is (spec section 10, ``test_hostile_files.py``).

Both read dcp_impl-fs checkpoints through a :class:`~dcp_impl.store.LocalStore` whose reads
are the plain ``open()`` calls many hand-written stores use (and torch's readers do).
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO

from torch.distributed.checkpoint.storage import StorageReader

from dcp_impl.errors import InvalidMetadataError, UnsafeFileError
from dcp_impl.filesystem import FileSystemReader
from dcp_impl.store import LocalStore
from dcp_impl.transfer import Source
from spec_tests.selftest.wrap import Wrapped

__all__ = ["BlocksOnSpecialFiles", "FollowsLinksOut"]


class _PlainSource:
    """A stored file opened with ``open()``: follows links, blocks on a FIFO."""

    def __init__(self, path: str) -> None:
        self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 (closed by close())

    def preadv(self, buffers: list[memoryview], offset: int) -> int:
        # docstring inherited
        return os.preadv(self._file.fileno(), buffers, offset)

    def close(self) -> None:
        # docstring inherited
        self._file.close()


class _PlainStore(LocalStore):
    """Reads through ``open()``; sizes from ``stat``; small files read to their limit."""

    def _checked(self, path: str) -> str:
        return path  # no check: whatever the name leads to is read

    def opener(self, path: str) -> Source:
        # docstring inherited
        return _PlainSource(self._checked(path))

    def size(self, name: str) -> int:
        # docstring inherited
        return os.stat(self._checked(self.path(name))).st_size

    def read_small(self, name: str, limit: int) -> bytes:
        # docstring inherited
        with open(self._checked(self.path(name)), "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InvalidMetadataError(f"{self.path(name)}: expected at most {limit} bytes")
        return data

    def read_range(self, name: str, start: int, length: int) -> bytes:
        # docstring inherited
        with open(self._checked(self.path(name)), "rb") as f:
            return os.pread(f.fileno(), length, start)


class _ContainedStore(_PlainStore):
    """Refuses links out of the checkpoint (resolved paths are checked against the root),
    but opens what remains with a blocking ``open()`` and never asks what kind of file it is."""

    def _checked(self, path: str) -> str:
        real, root = os.path.realpath(path), os.path.realpath(self.root)
        if os.path.commonpath([real, root]) != root:
            raise UnsafeFileError(f"{path}: expected a file inside {root}, found {real}")
        return real


class _Reader(FileSystemReader):
    """dcp_impl's reader on a store of ``store_type``, kept when ``reset`` retargets it."""

    store_type: type[LocalStore] = _PlainStore

    def __init__(self, path: str) -> None:
        super().__init__(self.store_type(path))

    def reset(self, checkpoint_id: object = None, **kwargs: Any) -> None:
        # docstring inherited
        target = None if checkpoint_id is None else self.store_type(os.fspath(checkpoint_id))  # type: ignore[call-overload]
        super().reset(target, **kwargs)


class _ContainedReader(_Reader):
    store_type = _ContainedStore


class FollowsLinksOut(Wrapped):
    """Opens stored files with a plain ``open()``, which follows a data or metadata file
    that is a link out of the checkpoint to ``/etc/passwd``, ``/proc/self/environ`` or any
    file the user can read.

    Family: hostile_files (a link out of the checkpoint is never opened).
    """

    base = "dcp_impl-fs"
    family = "hostile_files"

    def inner_reader(self, path: str) -> StorageReader:
        # docstring inherited
        return _Reader(path)


class BlocksOnSpecialFiles(Wrapped):
    """Checks that every file resolves inside the checkpoint, then opens it with a blocking
    ``open()`` without checking it is a regular file: a FIFO hangs the load forever.

    Family: hostile_files (a special file is refused within bounded time).
    """

    base = "dcp_impl-fs"
    family = "hostile_files"

    def inner_reader(self, path: str) -> StorageReader:
        # docstring inherited
        return _ContainedReader(path)
