"""dcp_impl.io._checksum: one checksum however the bytes are fed."""

from __future__ import annotations

import itertools
import threading
from unittest import mock

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from dcp_impl.io import _checksum
from dcp_impl.io._checksum import Digest, write_hashed


def _expected(data: bytes) -> str:
    return f"xxh3_64:{xxhash.xxh3_64(data).hexdigest()}"


@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=4))
def test_digest_of_pieces_is_the_digest_of_the_whole(data: bytes, cuts: list[int]) -> None:
    digest = Digest()
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        digest.update(data[start:end])
    assert digest.checksum() == _expected(data)


@given(size=st.integers(0, 70), piece=st.integers(1, 16))
def test_write_hashed_writes_everything_in_order_and_hashes_it(size: int, piece: int) -> None:
    data = bytes(range(size))
    written: list[bytes] = []
    with mock.patch.object(_checksum, "PIECE", piece):
        found = write_hashed(memoryview(data), lambda p: written.append(bytes(p)))
    assert found == _expected(data)
    assert b"".join(written) == data
    if size > piece:
        assert all(len(p) <= piece for p in written)


def test_write_hashed_hashes_beside_the_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_checksum, "PIECE", 4)
    threads: set[str] = set()
    real = Digest.update

    def update(self: Digest, data: memoryview | bytes) -> None:
        threads.add(threading.current_thread().name)
        real(self, data)

    monkeypatch.setattr(Digest, "update", update)
    write_hashed(memoryview(b"0123456789"), lambda p: None)
    assert len(threads) == 1
    assert next(iter(threads)).startswith("dcp_impl-hash")


def test_a_failing_write_stops_and_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_checksum, "PIECE", 4)
    calls: list[bytes] = []

    def write(piece: memoryview) -> None:
        calls.append(bytes(piece))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_hashed(memoryview(b"0123456789abcdef"), write)
    assert calls == [b"0123", b"4567"]
