"""dcp_impl.transfer's checksums: one checksum however the bytes are fed (an ItemWriter hashes
beside the write); piece checksums."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from typing import Any

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from dcp_impl.errors import InvalidMetadataError
from dcp_impl.testing import tuned
from dcp_impl.transfer import (
    MAX_PIECE_SIZE,
    MIN_PIECE_SIZE,
    PIECE_SIZE,
    Checksums,
    Digest,
    ItemWriter,
    piece_checksum,
    piece_size_for,
)


def _expected(data: bytes) -> str:
    return f"xxh3_64:{xxhash.xxh3_64(data).hexdigest()}"


def _expected_pieces(data: bytes, piece: int) -> str:
    if len(data) <= piece:
        return _expected(data)
    digests = [xxhash.xxh3_64(data[i : i + piece]).hexdigest() for i in range(0, len(data), piece)]
    return f"xxh3_64@{piece}:{''.join(digests)}"


@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=4))
def test_digest_of_pieces_is_the_digest_of_the_whole(data: bytes, cuts: list[int]) -> None:
    digest = Digest()
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        digest.update(data[start:end])
    assert digest.checksum() == _expected(data)


class _ListWriter(ItemWriter):
    """Keeps what it is given; ``fail_at``: the call (from 1) that raises no space left."""

    def __init__(self, piece_size: int, fail_at: int = 0) -> None:
        super().__init__("mem", piece_size=piece_size)
        self.written: list[bytes] = []
        self.threads: list[set[str]] = []  # the threads alive during each write
        self._fail_at = fail_at

    def _require_open(self) -> None:
        pass

    def _put(self, piece: memoryview) -> None:
        self.written.append(bytes(piece))
        self.threads.append({t.name for t in threading.enumerate()})
        if len(self.written) == self._fail_at:
            raise OSError(28, "No space left on device")

    def close(self) -> None:
        pass

    def discard(self) -> None:
        pass


@given(size=st.integers(0, 70), piece=st.integers(1, 16), step=st.integers(1, 40))
def test_a_writer_writes_everything_in_order_and_hashes_it(
    size: int, piece: int, step: int
) -> None:
    data = bytes(range(size))
    out = _ListWriter(piece)
    with tuned(write_step=step):
        found = out.write_bytes(data).checksum
    assert found == _expected_pieces(data, piece_size_for(size, piece))
    assert found == piece_checksum(data, piece)
    assert b"".join(out.written) == data
    if size > piece:
        assert all(len(p) <= max(piece, step) for p in out.written)


@given(
    limit=st.integers(2 * MIN_PIECE_SIZE, 3 * MIN_PIECE_SIZE),
    length=st.integers(0, 12 * MIN_PIECE_SIZE),
    steps=st.integers(1, 8),
)
def test_a_writer_cuts_a_long_item_into_balanced_pieces(
    limit: int, length: int, steps: int
) -> None:
    data = bytes(i % 251 for i in range(length))
    out = _ListWriter(limit)
    with tuned(write_step=steps * MIN_PIECE_SIZE):
        found = out.write_bytes(data).checksum
    assert found == _expected_pieces(data, piece_size_for(length, limit))
    assert b"".join(out.written) == data


def test_a_writer_hashes_beside_the_write() -> None:
    out = _ListWriter(2)
    with tuned(write_step=4):
        out.write_bytes(b"0123456789")
    assert len(out.written) == 3  # steps of 4 bytes: the hashing thread works beside each
    assert all(any(n.startswith("dcp_impl-hash") for n in alive) for alive in out.threads)


def test_a_failing_write_stops_and_propagates() -> None:
    out = _ListWriter(4, fail_at=2)
    with pytest.raises(OSError, match="No space left"), tuned(write_step=4):
        out.write_bytes(b"0123456789abcdef")
    assert out.written == [b"0123", b"4567"]


@given(length=st.integers(0, 5 * MIN_PIECE_SIZE), extra=st.integers(0, 3))
def test_piece_checksums_parse_back(length: int, extra: int) -> None:
    piece = MIN_PIECE_SIZE + extra
    data = bytes(i % 251 for i in range(length))
    parsed = Checksums.parse(piece_checksum(data, piece), length)
    assert parsed.count == max(1, -(-length // piece_size_for(length, piece)))
    for k in range(parsed.count):
        start, stop = parsed.span(k)
        assert parsed.found(data[start:stop]) == parsed.digest(k)
    assert parsed.touching(0, length) == range(parsed.count if length else 0)


@given(length=st.integers(1, 1 << 40), limit=st.integers(MIN_PIECE_SIZE, MAX_PIECE_SIZE))
def test_pieces_are_few_and_never_too_small(length: int, limit: int) -> None:
    size = piece_size_for(length, limit)
    if length <= limit:  # one piece: the whole-item form
        assert size == limit
        return
    assert MIN_PIECE_SIZE <= size <= limit
    assert -(-length // size) < 2 * -(-length // limit)  # fewer than twice as many as fixed


@given(
    parts=st.integers(1, 10).map(lambda k: 1 << k),
    per_part=st.integers(PIECE_SIZE // 2 + 1, PIECE_SIZE),
)
def test_halves_quarters_and_eighths_start_on_piece_boundaries(parts: int, per_part: int) -> None:
    """An item of 2**k equal parts of at most a piece each (rows of a row shard, say) has
    exactly those parts as pieces, so any split of it into 2**j equal shares (j <= k), as
    resharding from N to 2**j * N ranks makes, starts each share on a piece boundary."""
    length = parts * per_part
    size = piece_size_for(length)
    assert size == per_part
    for shares in (2, 4, 8):
        if shares <= parts:
            assert all(length * j // shares % size == 0 for j in range(shares))


def test_touching_names_only_the_pieces_of_a_byte_range() -> None:
    parsed = Checksums.parse(piece_checksum(bytes(10 * 4096), 4096), 10 * 4096)
    assert parsed.touching(4095, 4097) == range(2)
    assert parsed.touching(4096, 8192) == range(1, 2)
    assert parsed.touching(5, 5) == range(0)


@pytest.mark.parametrize(
    ("text", "length", "match"),
    [
        ("xxh3_64@4096:" + "0" * 16, 3 * 4096, "expected 3 digests"),
        ("xxh3_64@4096:" + "0" * 40, 3 * 4096, "expected 3 digests"),
        ("xxh3_64@0:" + "0" * 16, 10, "expected"),
        ("xxh3_64@4095:" + "0" * 16, 10, r"piece size in \[4096"),
        (f"xxh3_64@{MAX_PIECE_SIZE * 2}:" + "0" * 16, 10, "piece size in"),
        ("xxh3_64@99999999999999999999:00", 10, "expected"),
        ("xxh3_64@4096:" + "0" * 16, 2**63 - 1, "expected 2251799813685248 digests"),
        ("xxh3_64@4096:0G", 10, "expected"),
        ("XXH3:00", 10, "expected"),
        ("xxh3_64:" + "0" * 129, 10, "at most 128"),
    ],
)
def test_hostile_checksum_texts_are_typed_errors(text: str, length: int, match: str) -> None:
    with pytest.raises(InvalidMetadataError, match=match):
        Checksums.parse(text, length)


def _hash_in_child(queue: Any) -> None:
    out = _ListWriter(4)
    with tuned(write_step=8):
        queue.put(out.write_bytes(b"0123456789abcdef0123").checksum)


def test_a_forked_child_hashes_with_its_own_threads() -> None:
    # The parent's shared hashing pool has threads; a fork copies the pool but not them.
    with tuned(write_step=8):
        _ListWriter(4).write_bytes(b"x" * 64)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_hash_in_child, args=(queue,))
    child.start()
    child.join(timeout=30)
    if child.is_alive():  # its hashing waited on threads it does not have
        child.kill()
    assert child.exitcode == 0
    assert queue.get(timeout=5) == piece_checksum(b"0123456789abcdef0123", 4)
