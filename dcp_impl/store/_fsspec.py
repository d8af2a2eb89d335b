"""Checkpoints in object stores and other fsspec file systems (``s3://``, ``memory://``, ...).

A "directory" is a key prefix. Data files are written as one object each, streamed (s3fs
uploads multipart) and visible only once complete; a failed write aborts the upload and
removes whatever the file system already shows. Small files are committed with one PUT
(``pipe_file``), which object stores apply atomically. Reads are ranged GETs
(``cat_file``), one per ``preadv`` (in pieces of at most :data:`PART` bytes), on as many
threads as ``read_into`` runs; neighbouring items spanning up to :data:`PART` bytes are
fetched by one GET (``read_into(coalesce=...)``), so many small tensors cost one round trip.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterable, Mapping
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

from dcp_impl.errors import StorageFaultError
from dcp_impl.store._base import Store
from dcp_impl.transfer import ItemWriter, Source

__all__ = ["FsspecStore", "ObjectSource", "ObjectWriter", "URL_READ_THREADS", "PART"]

URL_READ_THREADS = 16
"""Default parallel reads for object stores: a ranged GET waits mostly on first-byte latency,
and stores serve many requests at once (docs/object-stores.md, "Reads", has the
measurements behind this number)."""
PART = 16 << 20
"""Largest ranged GET: bounds the temporary copy each reading thread holds before scattering
it (16 threads: at most 256 MiB), and is the range size S3 serves at full speed."""


class FsspecStore(Store):
    """A prefix of an fsspec file system, opened from a URL and ``storage_options``
    (``FsspecStore("s3://bucket/prefix", {"endpoint_url": ...})``)."""

    read_threads = URL_READ_THREADS
    coalesce = PART  # one GET serves all the small items it spans: a round trip each costs more

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url)
        fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        self._setup(url, fs, root.rstrip("/"), url.rstrip("/"))

    def _setup(self, url: str, fs: AbstractFileSystem, root: str, shown: str) -> None:
        self.url = url
        self.fs = fs
        self._root = root  # the prefix as the file system names it (no protocol)
        self._shown = shown  # the prefix as a URL, for read requests and messages

    def path(self, name: str) -> str:
        # docstring inherited
        return f"{self._shown}/{name}"

    def _key(self, name: str) -> str:
        return f"{self._root}/{name}"

    def opener(self, path: str) -> Source:
        # docstring inherited
        if path.startswith(f"{self._shown}/"):
            key = self._root + path[len(self._shown) :]
        else:
            key = self.fs._strip_protocol(path)
        return ObjectSource(self.fs, key)

    def child(self, name: str) -> FsspecStore:
        # docstring inherited
        store = FsspecStore.__new__(FsspecStore)
        store._setup(self.path(name), self.fs, self._key(name), self.path(name))
        return store

    def same_place(self, other: Store) -> bool:
        # docstring inherited
        return (
            isinstance(other, FsspecStore)
            and self.fs.protocol == other.fs.protocol
            and self._root == other._root
        )

    def make_dirs(self) -> None:
        # docstring inherited
        split_path = getattr(self.fs, "split_path", None)
        if callable(split_path):
            # An object store (s3fs, gcsfs, adlfs): no directories to make, and its makedirs
            # would create a missing bucket, so a mistyped bucket name would "save" into a
            # new bucket nobody reads. Saves never create buckets: it must exist.
            bucket = split_path(self._root)[0]
            self.fs.invalidate_cache(bucket)
            if not self.fs.exists(bucket):
                fault = StorageFaultError(
                    f"{self._shown}: expected the bucket {bucket!r} to exist, found none: "
                    "create it (saves never create buckets) or correct the URL"
                )
                fault.errno = errno.ENOENT
                raise fault
            return
        # File systems with directories (memory://, file://) need them.
        with contextlib.suppress(FileExistsError):
            self.fs.makedirs(self._root, exist_ok=True)

    def is_dir(self) -> bool:
        # docstring inherited
        self.fs.invalidate_cache(self._root)
        return bool(self.fs.isdir(self._root))

    def exists(self, name: str) -> bool:
        # docstring inherited
        self.fs.invalidate_cache(self._root)  # another process may have written it
        return bool(self.fs.exists(self._key(name)))

    def list_files(self) -> list[str]:
        # docstring inherited
        self.fs.invalidate_cache(self._root)
        try:
            entries = self.fs.ls(self._root, detail=True)
        except FileNotFoundError:
            return []
        prefix = f"{self._root}/"
        return [
            entry["name"].rstrip("/")[len(prefix) :]
            for entry in entries
            if entry.get("type") == "file" and entry["name"].startswith(prefix)
        ]

    def size(self, name: str) -> int:
        # docstring inherited
        return int(self.fs.size(self._key(name)))

    def read_range(self, name: str, start: int, length: int) -> bytes:
        # docstring inherited
        if length <= 0:
            return b""
        try:
            return bytes(self.fs.cat_file(self._key(name), start=start, end=start + length))
        except OSError:
            if start >= self.size(name):  # S3 refuses a range past the end (416), not empty
                return b""
            raise

    def create(self, name: str, *, sync: bool) -> ItemWriter:
        # docstring inherited
        # ``sync`` has no object-store meaning: an object is durable once its PUT returns.
        return ObjectWriter(self.fs, self._key(name), self.path(name))

    def commit(self, name: str, data: bytes, *, sync: bool) -> None:
        # docstring inherited
        self.fs.pipe_file(self._key(name), data)

    def create_new(self, name: str, data: bytes) -> None:
        # docstring inherited
        # A conditional PUT (If-None-Match, fsspec's mode="create") where the file system
        # has one; s3fs documents it for AWS S3 only (docs/object-stores.md).
        try:
            self.fs.pipe_file(self._key(name), data, mode="create")
        except (TypeError, NotImplementedError):  # no exclusive create: the racy default
            super().create_new(name, data)

    def rename(self, source: str, target: str) -> None:
        # docstring inherited
        # Object stores copy server-side, then delete: not atomic, so callers remove the
        # commit marker before renaming (docs/object-stores.md).
        # One copy and one delete (fs.mv lists the source first: a request more per move).
        self.fs.cp_file(self._key(source), self._key(target))
        self.fs.rm_file(self._key(source))

    def remove(self, names: Iterable[str]) -> None:
        # docstring inherited
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._key(name))


class ObjectSource:
    """One object, read with ranged GETs of at most ``part`` bytes; the size is taken once,
    when it is opened."""

    def __init__(self, fs: AbstractFileSystem, key: str, *, part: int = PART) -> None:
        self._fs = fs
        self._key = key
        self._part = part
        self._size = int(fs.size(key))  # raises FileNotFoundError for a missing object

    def preadv(self, buffers: list[memoryview], offset: int) -> int:
        # docstring inherited
        end = min(offset + sum(len(b) for b in buffers), self._size)
        cursor = _Cursor(buffers)
        for start in range(offset, end, self._part):
            stop = min(start + self._part, end)
            data = memoryview(self._fs.cat_file(self._key, start=start, end=stop))
            cursor.fill(data)
            if len(data) < stop - start:  # the object shrank since it was opened
                break
        return cursor.filled

    def close(self) -> None:
        # docstring inherited
        pass


class _Cursor:
    """Fills a list of buffers in order from consecutive pieces of data."""

    def __init__(self, buffers: list[memoryview]) -> None:
        self._views = [b if b.format == "B" else b.cast("B") for b in buffers if len(b)]
        self._index = 0
        self._at = 0
        self.filled = 0

    def fill(self, data: memoryview) -> None:
        while data and self._index < len(self._views):
            view = self._views[self._index]
            n = min(len(view) - self._at, len(data))
            view[self._at : self._at + n] = data[:n]
            data = data[n:]
            self._at += n
            self.filled += n
            if self._at == len(view):
                self._index, self._at = self._index + 1, 0


class ObjectWriter(ItemWriter):
    """Streams one new object; it appears complete on ``close`` or not at all."""

    def __init__(self, fs: AbstractFileSystem, key: str, shown: str) -> None:
        super().__init__(shown)
        self._fs = fs
        self._key = key
        self._file: Any = fs.open(key, "wb")

    def _require_open(self) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: write after close")

    def _put(self, piece: memoryview) -> None:
        self._file.write(piece)

    def close(self) -> None:
        # docstring inherited
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            file.close()  # completes the upload
        except BaseException:
            self._file = file
            self.discard()
            raise

    def discard(self) -> None:
        # docstring inherited
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(Exception):
                file.discard()  # aborts a multipart upload
            # Marked closed, so that the file's finalizer never tries to upload the rest.
            with contextlib.suppress(Exception):
                file.closed = True
        # Some file systems (memory://) show an object from the moment it is opened.
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm_file(self._key)
