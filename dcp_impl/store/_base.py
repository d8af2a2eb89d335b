"""The :class:`Store` abstract base class: the seam between dcp_impl's backends and storage."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence

from dcp_impl.errors import InvalidMetadataError
from dcp_impl.transfer import ItemWriter, ReadRequest, Source, read_into

__all__ = ["Store", "check_size"]


class Store(abc.ABC):
    """The files of one checkpoint directory (or object-store prefix), by relative name.

    Both backends do every file operation through a store: they make the directory, write
    data files (:meth:`create`), commit small files atomically (:meth:`commit`), move,
    list and remove files, and read byte ranges (:meth:`read`, :meth:`read_range`). Names
    are relative and ``/``-separated; :meth:`path` turns one into the string that read
    requests and error messages carry.

    Subclasses implement the abstract primitives. Every other method has a working
    default built on them; override it to go faster (a local directory maps files in
    :meth:`opener`, an object store answers :meth:`exists` with one request). The class
    attributes :attr:`read_threads` and :attr:`coalesce` tune :meth:`read`.
    ``dcp_impl.testing.StoreTests`` checks an implementation against this contract.
    """

    read_threads: int = 2
    """Parallel reads a reader runs by default on this kind of store."""
    coalesce: int = 0
    """Neighbouring reads of one file spanning at most this many bytes are fetched as one
    (0: never). Worth it where each read is a round trip (object stores)."""

    def __init__(self, url: str) -> None:
        self.url = url
        """The checkpoint id this store was opened with, as a string."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # ------------------------------------------------------------------ primitives

    @abc.abstractmethod
    def child(self, name: str) -> Store:
        """The store of the sub-directory ``name``."""

    @abc.abstractmethod
    def list_files(self) -> list[str]:
        """Names of the files directly in the directory; empty when there is none."""

    @abc.abstractmethod
    def size(self, name: str) -> int:
        """The size of ``name`` in bytes; ``FileNotFoundError`` when it is missing."""

    @abc.abstractmethod
    def read_range(self, name: str, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)`` of ``name``, fewer only where it ends;
        ``FileNotFoundError`` when it is missing."""

    @abc.abstractmethod
    def create(self, name: str, *, sync: bool) -> ItemWriter:
        """A writer of the new data file ``name``. Readers see none of it until the writer
        is closed (or it is a fresh name nobody reads); a discarded writer leaves nothing.
        With ``sync``, closing makes the file durable."""

    @abc.abstractmethod
    def commit(self, name: str, data: bytes, *, sync: bool) -> None:
        """Replace ``name`` with ``data`` atomically: readers see the old file or the new.
        With ``sync``, the new file is durable when this returns."""

    @abc.abstractmethod
    def rename(self, source: str, target: str) -> None:
        """Move ``source`` onto ``target``, replacing it (atomically where the store can;
        callers never rely on it for the commit point, which is :meth:`commit`)."""

    @abc.abstractmethod
    def remove(self, names: Iterable[str]) -> None:
        """Remove the files ``names``; missing ones are skipped."""

    # ------------------------------------------------------------------ defaults

    def path(self, name: str) -> str:
        """The full path (or URL) of ``name``, as read requests and error messages give it."""
        return f"{self.url.rstrip('/')}/{name}"

    def opener(self, path: str) -> Source:
        """Open ``path`` (as :meth:`path` gave it) for :func:`~dcp_impl.transfer.read_into`.

        The default serves every read through :meth:`read_range`; override it to read
        straight into the destination buffers (``preadv``), to map files in memory, or to
        return a source with device reads (``dcp_impl.transfer.DeviceReadable``).
        """
        prefix = self.path("")
        if not path.startswith(prefix):
            raise FileNotFoundError(f"{path}: expected a path under {prefix}")
        return _RangeSource(self, path[len(prefix) :])

    def read(
        self,
        requests: Sequence[ReadRequest],
        *,
        thread_count: int | None = None,
        verify: bool,
        max_inflight_bytes: int | None = None,
    ) -> None:
        """Fill the targets of ``requests`` (paths as :meth:`path` gives them): see
        :func:`~dcp_impl.transfer.read_into`, run with :meth:`opener` and :attr:`coalesce` on
        ``thread_count`` threads (default :attr:`read_threads`), holding at most
        ``max_inflight_bytes`` of host memory in buffers (None: no cap). An override must
        keep that cap: readers pass it only when one is set."""
        read_into(
            requests,
            thread_count=thread_count or self.read_threads,
            verify=verify,
            opener=self.opener,
            coalesce=self.coalesce,
            max_inflight_bytes=max_inflight_bytes,
        )

    def same_place(self, other: Store) -> bool:
        """Whether ``other`` names the same directory."""
        return type(other) is type(self) and other.url.rstrip("/") == self.url.rstrip("/")

    def make_dirs(self) -> None:
        """Create the directory and its parents (a no-op where directories are prefixes)."""
        return  # the default store's directories are prefixes: nothing to create

    def is_dir(self) -> bool:
        """Whether the directory exists (holds at least one file, where it is a prefix)."""
        return bool(self.list_files())

    def exists(self, name: str) -> bool:
        """Whether the file ``name`` exists."""
        try:
            self.size(name)
        except FileNotFoundError:
            return False
        return True

    def read_small(self, name: str, limit: int) -> bytes:
        """All of ``name``: ``FileNotFoundError`` when missing, ``InvalidMetadataError``
        when larger than ``limit`` bytes (checked before reading)."""
        size = self.size(name)
        check_size(self.path(name), size, limit)
        # One byte more than the size: a file replaced by a larger one since is caught.
        data = self.read_range(name, 0, size + 1)
        check_size(self.path(name), len(data), limit)
        return data

    def create_new(self, name: str, data: bytes) -> None:
        """Write the small file ``name`` only if it does not exist (``FileExistsError`` if it
        does); readers see all of it or nothing (the commit lock, docs/format.md).

        The default checks, then writes: two callers racing between the two steps may both
        succeed. Override it where the store has an exclusive create (``O_EXCL``, a
        conditional PUT)."""
        if self.exists(name):
            raise FileExistsError(f"{self.path(name)}: expected no file, found one")
        self.commit(name, data, sync=False)

    def sync(self) -> None:
        """Make the creations and renames so far durable (a no-op where each is already)."""
        return  # the default: each create, commit and rename is durable once it returns


def check_size(path: str, size: int, limit: int) -> None:
    """Refuse a small file (metadata, index) larger than ``limit`` before reading it."""
    if size > limit:
        raise InvalidMetadataError(f"{path}: expected at most {limit} bytes, found {size}")


class _RangeSource:
    """A stored file read through :meth:`Store.read_range` (the default opener)."""

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self._name = name
        store.size(name)  # a missing file fails when it is opened, as every source does

    def preadv(self, buffers: list[memoryview], offset: int) -> int:
        # docstring inherited
        done = 0
        for buffer in buffers:
            view = buffer.cast("B") if buffer.format != "B" else buffer
            data = self._store.read_range(self._name, offset + done, len(view))
            view[: len(data)] = data
            done += len(data)
            if len(data) < len(view):
                break
        return done

    def close(self) -> None:
        # docstring inherited
        pass
