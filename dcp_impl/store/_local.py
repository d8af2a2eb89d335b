"""A local directory as a :class:`~dcp_impl.store.Store`, through ``os`` calls: ``O_EXCL``
data files, fsync, temp file + ``os.replace`` commits, files read with ``os.preadv`` or
mapped in memory (:class:`~dcp_impl.store.LocalFile`).

Every read opens its file through :func:`~dcp_impl.store.open_regular` with the directory as
the root: only regular files inside the checkpoint are read (links that stay inside it are
followed), and small files are read without trusting ``stat`` (:func:`read_at_most`)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from dcp_impl.store._base import Store, check_size
from dcp_impl.store._disk import DataFileWriter, LocalFile, atomic_write, fsync_dir
from dcp_impl.store._files import open_regular, read_at_most, storage_fault
from dcp_impl.transfer import ItemWriter, Source

__all__ = ["LocalStore"]


class LocalStore(Store):
    """A local directory (created by :meth:`make_dirs` when a save starts)."""

    coalesce = 0  # local items are read (or mapped) in place: nothing to save by merging

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__(os.fspath(root))
        self.root = Path(root)

    def path(self, name: str) -> str:
        # docstring inherited
        return os.path.join(self.root, *name.split("/"))

    def opener(self, path: str) -> Source:
        # docstring inherited
        return LocalFile(path, self.root)

    def child(self, name: str) -> LocalStore:
        # docstring inherited
        return LocalStore(self.root / name)

    def same_place(self, other: Store) -> bool:
        # docstring inherited
        return isinstance(other, LocalStore) and self.root.resolve() == other.root.resolve()

    def make_dirs(self) -> None:
        # docstring inherited
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise storage_fault(err, str(self.root), "creating the checkpoint folder") from err

    def is_dir(self) -> bool:
        # docstring inherited
        return self.root.is_dir()

    def exists(self, name: str) -> bool:
        # docstring inherited
        return os.path.exists(self.path(name))

    def list_files(self) -> list[str]:
        # docstring inherited
        try:
            with os.scandir(self.root) as entries:
                return [entry.name for entry in entries if entry.is_file()]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def size(self, name: str) -> int:
        # docstring inherited
        fd = open_regular(self.path(name), root=self.root)
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def read_small(self, name: str, limit: int) -> bytes:
        # docstring inherited
        path = self.path(name)
        fd = open_regular(path, root=self.root)
        try:
            check_size(path, os.fstat(fd).st_size, limit)
            # One byte past the limit whatever stat says: a longer file is refused, and one
            # that never ends (or reports size 0) cannot grow memory without bound.
            data = read_at_most(fd, limit + 1)
        finally:
            os.close(fd)
        check_size(path, len(data), limit)
        return data

    def read_range(self, name: str, start: int, length: int) -> bytes:
        # docstring inherited
        fd = open_regular(self.path(name), root=self.root)
        try:
            return os.pread(fd, max(length, 0), start)
        finally:
            os.close(fd)

    def create(self, name: str, *, sync: bool) -> ItemWriter:
        # docstring inherited
        return DataFileWriter(self.path(name), sync=sync)

    def commit(self, name: str, data: bytes, *, sync: bool) -> None:
        # docstring inherited
        atomic_write(self.path(name), data, sync=sync)

    def create_new(self, name: str, data: bytes) -> None:
        # docstring inherited
        # Written whole under a private name, then linked: link() fails if the name exists,
        # and the file is complete from the moment anyone can open it.
        path = self.path(name)
        tmp = f"{path}.{uuid.uuid4().hex}.new"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with open(fd, "wb", closefd=True) as f:
                f.write(data)
            os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def rename(self, source: str, target: str) -> None:
        # docstring inherited
        os.replace(self.path(source), self.path(target))

    def sync(self) -> None:
        # docstring inherited
        fsync_dir(self.root)

    def remove(self, names: Iterable[str]) -> None:
        # docstring inherited
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(name))
