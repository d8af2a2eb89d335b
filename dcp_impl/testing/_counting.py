"""CountingStore: a Store that records every data byte range it reads, across processes."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from dcp_impl.store import Store
from dcp_impl.transfer import ItemWriter, Source

__all__ = ["CountingStore", "ReadRecord"]


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """One read from a data file: ``length`` bytes of ``path`` from ``offset``, by ``pid``."""

    pid: int
    path: str
    offset: int
    length: int


class CountingStore(Store):
    """``inner``, with every byte range its data reads return appended to the file ``log``.

    Proves what a load takes from storage (``read_data``: the opener's reads; metadata reads
    are not counted). Every process of a multi-process load may open its own CountingStore
    on the same ``log``: each read is one line, written with ``O_APPEND``, so lines of
    several processes never mix. Reads go through ``preadv`` only (files are not mapped),
    so each byte taken from storage is counted once, when it is read.
    """

    def __init__(self, inner: Store, log: str | os.PathLike[str]) -> None:
        super().__init__(inner.url)
        self.inner = inner
        self.log = os.fspath(log)
        self.read_threads = inner.read_threads
        self.coalesce = inner.coalesce

    @staticmethod
    def records(log: str | os.PathLike[str]) -> list[ReadRecord]:
        """Every read recorded in ``log`` so far (none if it does not exist)."""
        try:
            with open(log, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            pid, offset, length, path = line.split("\t", 3)
            out.append(ReadRecord(int(pid), path, int(offset), int(length)))
        return out

    def child(self, name: str) -> Store:
        # docstring inherited
        return CountingStore(self.inner.child(name), self.log)

    def list_files(self) -> list[str]:
        # docstring inherited
        return self.inner.list_files()

    def size(self, name: str) -> int:
        # docstring inherited
        return self.inner.size(name)

    def read_range(self, name: str, start: int, length: int) -> bytes:
        # docstring inherited
        return self.inner.read_range(name, start, length)

    def create(self, name: str, *, sync: bool) -> ItemWriter:
        # docstring inherited
        return self.inner.create(name, sync=sync)

    def commit(self, name: str, data: bytes, *, sync: bool) -> None:
        # docstring inherited
        self.inner.commit(name, data, sync=sync)

    def rename(self, source: str, target: str) -> None:
        # docstring inherited
        self.inner.rename(source, target)

    def remove(self, names: Iterable[str]) -> None:
        # docstring inherited
        self.inner.remove(names)

    def path(self, name: str) -> str:
        # docstring inherited
        return self.inner.path(name)

    def make_dirs(self) -> None:
        # docstring inherited
        self.inner.make_dirs()

    def opener(self, path: str) -> Source:
        # docstring inherited
        return _CountingSource(self.inner.opener(path), path, self.log)


class _CountingSource:
    """A source that appends each read's range to the log (and offers no mapping)."""

    def __init__(self, inner: Source, path: str, log: str) -> None:
        self._inner = inner
        self._path = path
        self._log = log

    def preadv(self, buffers: list[memoryview], offset: int) -> int:
        # docstring inherited
        done = self._inner.preadv(buffers, offset)
        line = f"{os.getpid()}\t{offset}\t{done}\t{self._path}\n".encode()
        fd = os.open(self._log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return done

    def close(self) -> None:
        # docstring inherited
        self._inner.close()
