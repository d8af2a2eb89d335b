"""dcp_impl.transfer reads in few system calls: the runs of a sub-box read straight into their
destinations by vectored preadv, and neighbouring items coalesced into one read."""

from __future__ import annotations

import dataclasses
import mmap
import os
import uuid
from pathlib import Path

import pytest
import torch
from _reads import (
    DTYPES,
    PreadOnly,
    assert_filled,
    bytes_of,
    chunk_values,
    counting_preadv,
    read_request,
    region,
    store_chunk,
    sub_boxes,
    two_sub_boxes,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dcp_impl import transfer
from dcp_impl.errors import CorruptCheckpointError
from dcp_impl.layout import Box, byte_span
from dcp_impl.store import DataFileWriter, LocalFile
from dcp_impl.testing import Tuning, tuned
from dcp_impl.transfer.plans import coalesced, plan_runs

# --------------------------------------------------------------------------- direct run reads


def _element_offsets(chunk_sizes: tuple[int, ...], sub: Box) -> list[int]:
    """Brute force: the element offsets of ``sub`` in a row-major chunk, in row-major order."""
    index = torch.arange(Box.full(chunk_sizes).numel).reshape(chunk_sizes)
    return region(index, sub).reshape(-1).tolist()


@st.composite
def _chunk_and_sub(draw: st.DrawFn) -> tuple[tuple[int, ...], Box]:
    """A chunk shape and a non-empty sub-box of it."""
    shape = tuple(draw(st.lists(st.integers(1, 6), max_size=4), label="chunk"))
    offsets = [draw(st.integers(0, n - 1)) for n in shape]
    sizes = [draw(st.integers(1, n - o)) for n, o in zip(shape, offsets, strict=True)]
    return shape, Box(tuple(offsets), tuple(sizes))


@settings(max_examples=60, deadline=None)
@given(case=_chunk_and_sub(), itemsize=st.sampled_from([1, 2, 8]))
@example(case=((3, 2, 2), Box((1, 0, 0), (2, 2, 2))), itemsize=1)  # rows of full planes: 1 run
@example(case=((4, 3, 5), Box((1, 1, 2), (2, 2, 3))), itemsize=2)  # a 3-d interior box
def test_plan_runs_matches_brute_force(case: tuple[tuple[int, ...], Box], itemsize: int) -> None:
    shape, sub = case
    runs = plan_runs(shape, sub, itemsize)
    covered = [
        (start + byte) // itemsize
        for start in runs.starts
        for byte in range(0, runs.length, itemsize)
    ]
    assert covered == _element_offsets(shape, sub)
    assert list(runs.starts) == sorted(set(runs.starts))
    gaps = [b - a - runs.length for a, b in zip(runs.starts, runs.starts[1:], strict=False)]
    assert all(g > 0 for g in gaps), "adjacent runs must have been one run"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple),
    dtype=st.sampled_from(DTYPES),
    count=st.integers(1, 3),
    iov_max=st.sampled_from([3, 4, 1024]),
    max_gap=st.sampled_from([0, 5, 1 << 20]),
)
def test_direct_run_reads_are_byte_exact(
    tmp_path: Path,
    data: st.DataObject,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    count: int,
    iov_max: int,
    max_gap: int,
) -> None:
    chunk = chunk_values(shape, dtype, seed=len(shape))
    path = tmp_path / f"{uuid.uuid4().hex}.bin"
    stored = store_chunk(path, chunk)
    subs = [data.draw(sub_boxes(shape), label=f"sub{i}") for i in range(count)]
    targets = [transfer.Target(s, torch.full(s.sizes, 1, dtype=dtype)) for s in subs]
    # min_run=1: every run takes the direct path
    with tuned(min_run=1, iov_max=iov_max, max_gap=max_gap):
        transfer.read_into(
            [read_request(path, stored, chunk, *targets)], verify=False, opener=LocalFile
        )
    for t in targets:
        assert bytes_of(t.dest) == bytes_of(region(chunk, t.sub)), t.sub


def recording_preadv(monkeypatch: pytest.MonkeyPatch, most: int | None = None) -> list[list[int]]:
    """Record the buffer lengths of each preadv call; with ``most``, read at most that many
    bytes per call (as a signal or the kernel's per-call limit may)."""
    calls: list[list[int]] = []
    real = os.preadv

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        calls.append([len(b) for b in buffers])
        if most is None:
            return real(fd, buffers, offset)
        kept, left = [], most
        for b in buffers:
            kept.append(b[: min(left, len(b))])
            left -= len(kept[-1])
        return real(fd, kept, offset)

    monkeypatch.setattr(os, "preadv", preadv)
    return calls


def test_column_halves_read_the_chunk_once_into_their_destinations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, cols = 16, 2 * Tuning().min_run  # a bf16 half row is exactly MIN_RUN bytes
    chunk = chunk_values((rows, cols), torch.bfloat16)
    stored = store_chunk(tmp_path / "d.bin", chunk)
    halves = [Box((0, h * cols // 2), (rows, cols // 2)) for h in range(2)]
    targets = [transfer.Target(b, torch.zeros(b.sizes, dtype=torch.bfloat16)) for b in halves]
    calls = recording_preadv(monkeypatch)
    request = read_request(tmp_path / "d.bin", stored, chunk, *targets)
    transfer.read_into([request], verify=False, opener=PreadOnly)
    # One call, one buffer per half row in file order, no scratch: every byte read once.
    assert calls == [[cols] * (2 * rows)]
    assert_filled(chunk, targets)

    calls.clear()
    left = transfer.Target(halves[0], torch.zeros(halves[0].sizes, dtype=torch.bfloat16))
    request = read_request(tmp_path / "d.bin", stored, chunk, left)
    transfer.read_into([request], verify=False, opener=PreadOnly)
    # The right halves between two left halves go to scratch, in the same call.
    assert calls == [[cols, cols] * (rows - 1) + [cols]]
    assert torch.equal(left.dest.view(torch.int16), chunk[:, : cols // 2].view(torch.int16))


def test_short_runs_and_verified_reads_are_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = chunk_values((8, 64), torch.float32)  # a half row is 128 bytes: under MIN_RUN
    stored = store_chunk(tmp_path / "d.bin", chunk)
    sub = Box((0, 0), (8, 32))
    calls = recording_preadv(monkeypatch)
    for opener in (PreadOnly, LocalFile):
        for verify in (False, True):
            dest = torch.zeros(sub.sizes)
            request = read_request(tmp_path / "d.bin", stored, chunk, transfer.Target(sub, dest))
            transfer.read_into([request], verify=verify, opener=opener)
            assert torch.equal(dest.view(torch.int32), chunk[:, :32].view(torch.int32))
    span = byte_span((8, 64), sub, 4)[1]
    # Unmappable: one staging read each (the span, the whole item). Mapped: no read at all.
    assert calls == [[span], [stored.length]]


def test_large_gaps_start_a_new_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunk = chunk_values((4, 6, 3), torch.int8)
    stored = store_chunk(tmp_path / "d.bin", chunk)
    sub = Box((1, 2, 0), (3, 2, 3))  # runs of 6 bytes; gaps of 12 bytes, 12 again between rows
    dest = torch.zeros(sub.sizes, dtype=torch.int8)
    calls = recording_preadv(monkeypatch)
    with tuned(min_run=1, max_gap=11):
        request = read_request(tmp_path / "d.bin", stored, chunk, transfer.Target(sub, dest))
        transfer.read_into([request], verify=False, opener=PreadOnly)
    assert calls == [[6], [6], [6]]
    assert torch.equal(dest, chunk[1:, 2:4])


def test_interrupted_vectored_reads_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows, cols = 6, Tuning().min_run
    chunk = chunk_values((rows, cols), torch.int16)
    path = tmp_path / "d.bin"
    stored = store_chunk(path, chunk)
    sub = Box((1, 0), (4, cols // 2))
    dest = torch.zeros(sub.sizes, dtype=torch.int16)
    calls = recording_preadv(monkeypatch, most=1000)
    request = read_request(path, stored, chunk, transfer.Target(sub, dest))
    transfer.read_into([request], verify=False, opener=PreadOnly)
    assert torch.equal(dest, chunk[1:5, : cols // 2])
    assert len(calls) > 1
    os.truncate(path, stored.offset + stored.length - 4 * cols)  # rows 4 and 5 are gone
    with pytest.raises(CorruptCheckpointError, match=r"'w' chunk is truncated"):
        transfer.read_into(
            [read_request(path, stored, chunk, transfer.Target(sub, dest))],
            verify=False,
            opener=LocalFile,
        )


# --- coalesced reads (object stores: one round trip for neighbouring items) -------------------


def _small_items(path: Path, count: int) -> tuple[list[torch.Tensor], list[transfer.StoredRange]]:
    chunks = [chunk_values((3, 5), torch.float32, seed=i) for i in range(count)]
    with DataFileWriter(path) as out:
        ranges = [out.write_tensor(c) for c in chunks]
    return chunks, ranges


def _requests_for(
    path: Path,
    chunks: list[torch.Tensor],
    ranges: list[transfer.StoredRange],
    dests: list[torch.Tensor],
) -> list[transfer.ReadRequest]:
    return [
        read_request(path, r, c, transfer.Target(Box.full((3, 5)), d))
        for c, r, d in zip(chunks, ranges, dests, strict=True)
    ]


@pytest.mark.parametrize("verify", [True, False])
def test_coalesced_items_are_fetched_by_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verify: bool
) -> None:
    path = tmp_path / "d.bin"
    chunks, ranges = _small_items(path, 6)
    dests = [torch.zeros(5, 3).t() if i % 2 else torch.zeros(3, 5) for i in range(6)]
    calls = recording_preadv(monkeypatch)
    requests = _requests_for(path, chunks, ranges, dests)
    # 4 items fit 4 * 60 bytes; the next batch starts at the fifth.
    transfer.read_into(requests[::-1], verify=verify, opener=PreadOnly, coalesce=4 * 60)
    assert calls == [[4 * 60], [2 * 60]]
    for chunk, dest in zip(chunks, dests, strict=True):
        assert torch.equal(dest, chunk)


def test_coalesced_reads_check_and_name_each_item(tmp_path: Path) -> None:
    path = tmp_path / "d.bin"
    chunks, ranges = _small_items(path, 4)
    raw = bytearray(path.read_bytes())
    raw[ranges[2].offset + 7] ^= 0x10
    path.write_bytes(bytes(raw))
    dests = [torch.zeros(3, 5) for _ in chunks]
    requests = [
        dataclasses.replace(r, label=f"item {i}")
        for i, r in enumerate(_requests_for(path, chunks, ranges, dests))
    ]
    with pytest.raises(CorruptCheckpointError, match=r"item item 2 .*checksum"):
        transfer.read_into(requests, opener=PreadOnly, coalesce=1 << 20)
    os.truncate(path, ranges[3].offset + 10)
    with pytest.raises(CorruptCheckpointError, match=r"item item 3 is truncated"):
        transfer.read_into(requests, verify=False, opener=PreadOnly, coalesce=1 << 20)


@given(
    spans=st.lists(
        st.tuples(st.sampled_from("ab"), st.integers(0, 50), st.integers(0, 3)), max_size=12
    ),
    limit=st.integers(0, 60),
)
def test_batches_partition_requests_in_order_within_the_limit(
    spans: list[tuple[str, int, int]], limit: int
) -> None:
    ordered = sorted(
        (transfer.ReadRequest(p, o, 4 * n, (n,), torch.float32, ()) for p, o, n in spans),
        key=lambda r: (r.path, r.offset),
    )
    batches = coalesced(ordered, limit)
    assert [r for batch in batches for r in batch] == ordered
    for batch in batches:
        assert len({r.path for r in batch}) == 1
        if len(batch) > 1:
            assert max(r.offset + r.length for r in batch) - batch[0].offset <= limit
    if limit == 0:
        assert all(len(batch) == 1 for batch in batches)


def test_coalesced_items_at_unaligned_offsets(tmp_path: Path) -> None:
    path = tmp_path / "d.bin"
    chunks = [
        torch.tensor([True, False, True]),
        chunk_values((2, 2), torch.float64, seed=1),
        chunk_values((3,), torch.int16, seed=2),
        chunk_values((2, 3), torch.complex64, seed=3),
    ]
    with DataFileWriter(path) as out:
        ranges = [out.write_tensor(c) for c in chunks]
    assert ranges[1].offset % 8 != 0  # after 3 bools
    dests = [torch.zeros_like(c) for c in chunks]
    requests = [
        read_request(path, r, c, transfer.Target(Box.full(tuple(c.shape)), d))
        for c, r, d in zip(chunks, ranges, dests, strict=True)
    ]
    for verify in (True, False):
        transfer.read_into(requests, verify=verify, opener=PreadOnly, coalesce=1 << 20)
        assert all(bytes_of(d) == bytes_of(c) for c, d in zip(chunks, dests, strict=True))


def test_a_file_that_cannot_be_mapped_is_read_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = chunk_values((16, 32), torch.bfloat16)
    stored = store_chunk(tmp_path / "d.bin", chunk)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(19, "No such device")  # what mmap gives on a file system without it

    monkeypatch.setattr(mmap, "mmap", refuse)
    counts = counting_preadv(monkeypatch)
    for verify in (True, False):
        targets = two_sub_boxes(chunk)
        transfer.read_into(
            [read_request(tmp_path / "d.bin", stored, chunk, *targets)],
            verify=verify,
            opener=LocalFile,
        )
        assert_filled(chunk, targets)
    assert counts  # the bytes came through preadv
