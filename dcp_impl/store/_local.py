"""Where a checkpoint's files live: a local directory or a prefix of an object store.

A backend does every file operation outside the hot read path through one :class:`Store`,
chosen from the checkpoint id by :func:`open_store`: :class:`LocalStore` for local paths
(``os``-level code: ``O_EXCL`` data files, fsync, atomic rename) and
:class:`~dcp_impl.store._fsspec.FsspecStore` for fsspec URLs (``s3://bucket/prefix``,
``memory://name``: whole-object writes, ranged reads). Names inside a store are relative and
``/``-separated; :meth:`Store.path` turns one into the string read requests and error
messages carry. Reads go through :func:`read_from`, which hands ``read_into`` the store's
:data:`~dcp_impl._io._sources.Opener` (``LocalFile`` for local stores) and ``coalesce``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from dcp_impl.store._registry import is_local_path
from dcp_impl._io._read import ReadRequest, read_into
from dcp_impl._io._sources import LocalFile, Opener
from dcp_impl._io._write import DataFileWriter, ItemWriter, atomic_write, fsync_dir
from dcp_impl.errors import InvalidMetadataError

__all__ = ["Store", "LocalStore", "open_store", "is_url", "is_checkpoint_id", "read_from"]

LOCAL_READ_THREADS = 2


class Store(Protocol):
    """The files of one checkpoint directory (or object-store prefix), by relative name."""

    @property
    def url(self) -> str:
        """The checkpoint id this store was opened with, as a string."""
        ...

    @property
    def read_threads(self) -> int:
        """A good default number of parallel reads for this kind of store."""
        ...

    @property
    def opener(self) -> Opener:
        """Opens stored files for ``read_into``."""
        ...

    @property
    def coalesce(self) -> int:
        """Neighbouring reads spanning at most this many bytes are fetched as one (0: never)."""
        ...

    def path(self, name: str) -> str:
        """The full path (or URL) of ``name``, as read requests and error messages give it."""
        ...

    def child(self, name: str) -> Store:
        """The store of the sub-directory ``name``."""
        ...

    def same_place(self, other: Store) -> bool:
        """Whether ``other`` names the same directory."""
        ...

    def make_dirs(self) -> None:
        """Create the directory and its parents (a no-op where directories are prefixes)."""
        ...

    def is_dir(self) -> bool:
        """Whether the directory exists (holds at least one object, on object stores)."""
        ...

    def exists(self, name: str) -> bool:
        """Whether the file ``name`` exists."""
        ...

    def list_files(self) -> list[str]:
        """Names of the files directly in the directory; empty when there is none."""
        ...

    def size(self, name: str) -> int:
        """The size of ``name`` in bytes; ``FileNotFoundError`` when it is missing."""
        ...

    def read_small(self, name: str, limit: int) -> bytes:
        """All of ``name``: ``FileNotFoundError`` when missing, ``InvalidMetadataError``
        when larger than ``limit`` bytes (checked before reading)."""
        ...

    def read_range(self, name: str, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)`` of ``name``, fewer only where it ends."""
        ...

    def create(self, name: str, *, sync: bool) -> ItemWriter:
        """A writer of the new data file ``name``; readers see it only once it is closed
        (object stores) or it is a fresh name nobody reads (local files)."""
        ...

    def commit(self, name: str, data: bytes, *, sync: bool) -> None:
        """Replace ``name`` with ``data`` atomically: readers see the old file or the new."""
        ...

    def rename(self, source: str, target: str) -> None:
        """Move ``source`` onto ``target``, replacing it."""
        ...

    def sync(self) -> None:
        """Make the creations and renames so far durable."""
        ...

    def remove(self, names: Iterable[str]) -> None:
        """Remove the files ``names``; missing ones are skipped."""
        ...


class LocalStore:
    """A local directory, through ``os`` calls."""

    read_threads = LOCAL_READ_THREADS
    opener: Opener = LocalFile
    coalesce = 0  # local items are read (or mapped) in place: nothing to save by merging

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.url = os.fspath(root)
        self.root = Path(root)

    def path(self, name: str) -> str:
        # docstring inherited
        return os.path.join(self.root, *name.split("/"))

    def child(self, name: str) -> LocalStore:
        # docstring inherited
        return LocalStore(self.root / name)

    def same_place(self, other: Store) -> bool:
        # docstring inherited
        return isinstance(other, LocalStore) and self.root.resolve() == other.root.resolve()

    def make_dirs(self) -> None:
        # docstring inherited
        self.root.mkdir(parents=True, exist_ok=True)

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
        return os.stat(self.path(name)).st_size

    def read_small(self, name: str, limit: int) -> bytes:
        # docstring inherited
        path = self.path(name)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                _check_size(path, size, limit)
                return f.read()
        except NotADirectoryError as err:  # a parent is a file: the file is not there
            raise FileNotFoundError(err.errno, err.strerror, path) from err

    def read_range(self, name: str, start: int, length: int) -> bytes:
        # docstring inherited
        with open(self.path(name), "rb") as f:
            return os.pread(f.fileno(), length, start)

    def create(self, name: str, *, sync: bool) -> ItemWriter:
        # docstring inherited
        return DataFileWriter(self.path(name), sync=sync)

    def commit(self, name: str, data: bytes, *, sync: bool) -> None:
        # docstring inherited
        atomic_write(self.path(name), data, sync=sync)

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


def _check_size(path: str, size: int, limit: int) -> None:
    if size > limit:
        raise InvalidMetadataError(f"{path}: expected at most {limit} bytes, found {size}")


def is_url(checkpoint_id: object) -> bool:
    """Whether ``checkpoint_id`` is a URL of a protocol fsspec knows (``s3://bucket/prefix``,
    chained ``simplecache::s3://...``). Total: never raises, imports no fsspec backend."""
    try:
        text = os.fspath(checkpoint_id)  # type: ignore[call-overload]
    except Exception:  # not path-like, or a hostile __fspath__: a total function must not raise
        return False
    if not isinstance(text, str) or "://" not in text or "\0" in text:
        return False
    import fsspec  # here, not at module level: local checkpoints never need it

    known = set(fsspec.available_protocols())
    parts = text.split("::")
    protocol, _, rest = parts[-1].partition("://")
    # Earlier parts of a chain are bare protocol names (with options given separately).
    names = [protocol, *(part.partition("://")[0] for part in parts[:-1])]
    return bool(rest.strip("/")) and all(name in known for name in names)


def is_checkpoint_id(checkpoint_id: object) -> bool:
    """Whether ``checkpoint_id`` names a local directory or an object-store prefix that
    :func:`open_store` accepts. Total: never raises."""
    return is_local_path(checkpoint_id) or is_url(checkpoint_id)


def open_store(
    checkpoint_id: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> Store:
    """The store of ``checkpoint_id``: local paths keep ``os``-level I/O; URLs go through
    fsspec, which gets ``storage_options`` (credentials, endpoint) and its own environment
    variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...) untouched."""
    if is_local_path(checkpoint_id):
        return LocalStore(checkpoint_id)
    if is_url(checkpoint_id):
        from dcp_impl.store._fsspec import FsspecStore

        return FsspecStore(os.fspath(checkpoint_id), storage_options)
    raise ValueError(
        f"checkpoint id {checkpoint_id!r}: expected a local path or a URL of a protocol "
        "fsspec knows"
    )


def read_from(
    store: Store, requests: Sequence[ReadRequest], *, thread_count: int, verify: bool
) -> None:
    """``read_into(requests, ...)`` with the store's opener and coalescing (see
    :func:`read_into`)."""
    read_into(
        requests,
        thread_count=thread_count,
        verify=verify,
        opener=store.opener,
        coalesce=store.coalesce,
    )
