"""Tests of dcp_impl.io: atomic commit, data-file writing, byte-range reads, thread pool."""

from __future__ import annotations

import dataclasses
import mmap
import os
import threading
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from unittest import mock

import pytest
import torch
import xxhash
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dcp_impl import io as dio
from dcp_impl.errors import CorruptCheckpointError, InvalidMetadataError, UnsupportedError
from dcp_impl.io import _runs
from dcp_impl.layout import Box, byte_span

DTYPES = [torch.float32, torch.bfloat16, torch.int64, torch.complex64, torch.bool, torch.uint8]


def _bytes(t: torch.Tensor) -> bytes:
    flat = t.detach().clone(memory_format=torch.contiguous_format).reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def _values(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = torch.Size(shape).numel() * dtype.itemsize
    high = 2 if dtype == torch.bool else 256  # a bool byte other than 0/1 has no defined value
    return torch.randint(0, high, (n,), dtype=torch.uint8, generator=g).view(dtype).reshape(shape)


def _store(path: Path, chunk: torch.Tensor) -> dio.StoredRange:
    with dio.DataFileWriter(path, sync=False) as out:
        out.write_bytes(b"header")  # items need not start at offset 0
        return out.write_tensor(chunk)


def _request(
    path: Path, stored: dio.StoredRange, chunk: torch.Tensor, *targets: dio.Target
) -> dio.ReadRequest:
    return dio.ReadRequest(
        path=str(path),
        offset=stored.offset,
        length=stored.length,
        chunk_sizes=tuple(chunk.shape),
        dtype=chunk.dtype,
        targets=targets,
        checksum=stored.checksum,
        label="'w' chunk",
    )


def _region(chunk: torch.Tensor, sub: Box) -> torch.Tensor:
    view = chunk
    for d, (o, s) in enumerate(zip(sub.offsets, sub.sizes, strict=True)):
        view = view.narrow(d, o, s)
    return view


def _assert_filled(chunk: torch.Tensor, targets: Sequence[dio.Target]) -> None:
    """Each bf16 target holds exactly its sub-box of ``chunk``, bit for bit."""
    for t in targets:
        assert torch.equal(t.dest.view(torch.int16), _region(chunk, t.sub).view(torch.int16))


# --------------------------------------------------------------------------- commit & write


def test_atomic_write_replaces_file(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    dio.atomic_write(target, b"old")
    dio.atomic_write(target, b"new", sync=False)
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["m.json"]


def test_atomic_write_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m.json"
    dio.atomic_write(target, b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        dio.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.json"], "the temp file must be removed"


def test_writer_stores_logical_values_with_checksums(tmp_path: Path) -> None:
    base = _values((4, 6), torch.complex64)
    items = [base.t(), base[::2, 1:], torch.tensor(7, dtype=torch.int16), base.conj(), -base]
    path = tmp_path / "d.bin"
    with dio.DataFileWriter(path) as out:
        ranges = [out.write_tensor(t) for t in items]
    data = path.read_bytes()
    offset = 0
    for t, r in zip(items, ranges, strict=True):
        expected = _bytes(t.resolve_conj().resolve_neg())
        assert (r.offset, r.length) == (offset, len(expected))
        assert data[r.offset : r.offset + r.length] == expected
        assert r.checksum == f"xxh3_64:{xxhash.xxh3_64(expected).hexdigest()}"
        offset += r.length
    assert len(data) == offset


def test_writer_never_overwrites_and_discards_on_error(tmp_path: Path) -> None:
    path = tmp_path / "d.bin"
    path.write_bytes(b"user data")
    with pytest.raises(FileExistsError):
        dio.DataFileWriter(path)
    assert path.read_bytes() == b"user data"
    fresh = tmp_path / "e.bin"

    def write_then_fail() -> None:
        with dio.DataFileWriter(fresh) as out:
            out.write_bytes(b"partial")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert not fresh.exists()


def test_writer_rejects_sparse_tensors(tmp_path: Path) -> None:
    with dio.DataFileWriter(tmp_path / "d.bin") as out, pytest.raises(UnsupportedError):
        out.write_tensor(torch.eye(3).to_sparse())


# --------------------------------------------------------------------------- reads


@st.composite
def _sub_boxes(draw: st.DrawFn, shape: tuple[int, ...]) -> Box:
    offsets, sizes = [], []
    for n in shape:
        start = draw(st.integers(0, n))
        offsets.append(start)
        sizes.append(draw(st.integers(0, n - start)))
    return Box(tuple(offsets), tuple(sizes))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    shape=st.lists(st.integers(0, 5), max_size=3).map(tuple),
    dtype=st.sampled_from(DTYPES),
    verify=st.booleans(),
    stage_all=st.booleans(),
    strided_dest=st.booleans(),
)
def test_read_into_returns_exact_sub_box(
    tmp_path: Path,
    data: st.DataObject,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    verify: bool,
    stage_all: bool,
    strided_dest: bool,
) -> None:
    chunk = _values(shape, dtype, seed=len(shape))
    path = tmp_path / f"{uuid.uuid4().hex}.bin"  # tmp_path is shared by all examples
    stored = _store(path, chunk)
    sub = data.draw(_sub_boxes(shape), label="sub")
    dest = torch.zeros(sub.sizes, dtype=dtype)
    if strided_dest:  # a transposed view of a contiguous buffer
        dest = torch.zeros(sub.sizes[::-1], dtype=dtype).permute(tuple(reversed(range(len(shape)))))
    dio.read_into(
        [_request(path, stored, chunk, dio.Target(sub, dest))], verify=verify, stage_all=stage_all
    )
    assert _bytes(dest) == _bytes(_region(chunk, sub))


def test_read_converts_to_destination_dtype(tmp_path: Path) -> None:
    chunk = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    stored = _store(tmp_path / "d.bin", chunk)
    dest = torch.zeros(2, 3, dtype=torch.float64)
    dio.read_into([_request(tmp_path / "d.bin", stored, chunk, dio.Target(Box.full((2, 3)), dest))])
    assert torch.equal(dest, chunk.double())


def _counting_preadv(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    counts: list[int] = []
    real = os.preadv

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        n = real(fd, buffers, offset)
        counts.append(n)
        return n

    monkeypatch.setattr(os, "preadv", preadv)
    return counts


class _PreadOnly:
    """A local file that cannot be mapped: read_into must fall back to preadv."""

    def __init__(self, path: str) -> None:
        self._file = dio.LocalFile(path)

    def preadv(self, buffers: list[memoryview], offset: int) -> int:
        return self._file.preadv(buffers, offset)

    def close(self) -> None:
        self._file.close()


def _two_sub_boxes(chunk: torch.Tensor) -> list[dio.Target]:
    """An exact byte span and a strided sub-box of a (16, 32) chunk."""
    boxes = Box((4, 0), (3, 32)), Box((2, 5), (3, 4))
    return [dio.Target(b, torch.zeros(b.sizes, dtype=chunk.dtype)) for b in boxes]


def test_unverified_partial_read_reads_only_the_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = _values((16, 32), torch.bfloat16)
    stored = _store(tmp_path / "d.bin", chunk)
    counts = _counting_preadv(monkeypatch)
    targets = _two_sub_boxes(chunk)
    request = _request(tmp_path / "d.bin", stored, chunk, *targets)
    dio.read_into([request], verify=False, opener=_PreadOnly)
    spans = [byte_span((16, 32), t.sub, 2)[1] for t in targets]
    assert sum(counts) == sum(spans) < stored.length
    _assert_filled(chunk, targets)


def test_mapped_partial_read_copies_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Local files map: short runs are copied out of the mapping (touching only their pages),
    # long runs still land by preadv straight in their destination.
    chunk = _values((16, 32), torch.bfloat16)
    stored = _store(tmp_path / "d.bin", chunk)
    counts = _counting_preadv(monkeypatch)
    exact, strided = _two_sub_boxes(chunk)
    dio.read_into([_request(tmp_path / "d.bin", stored, chunk, exact, strided)], verify=False)
    assert counts == [byte_span((16, 32), exact.sub, 2)[1]]
    _assert_filled(chunk, [exact, strided])


def test_verified_partial_read_checks_the_whole_item(tmp_path: Path) -> None:
    chunk = _values((8, 8), torch.float32)
    path = tmp_path / "d.bin"
    stored = _store(path, chunk)
    sub = Box((0, 0), (1, 8))
    with open(path, "r+b") as f:  # corrupt the last byte: outside the sub-box's span
        f.seek(stored.offset + stored.length - 1)
        last = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([last[0] ^ 0xFF]))

    def read(verify: bool) -> torch.Tensor:
        dest = torch.zeros(1, 8)
        dio.read_into([_request(path, stored, chunk, dio.Target(sub, dest))], verify=verify)
        return dest

    assert torch.equal(read(verify=False).view(torch.int32), chunk[:1].view(torch.int32))
    with pytest.raises(CorruptCheckpointError, match=r"d\.bin: item 'w' chunk .*checksum"):
        read(verify=True)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_data_is_reported(tmp_path: Path, damage: str) -> None:
    chunk = _values((4, 4), torch.int32)
    path = tmp_path / "d.bin"
    stored = _store(path, chunk)
    if damage == "flip":
        raw = bytearray(path.read_bytes())
        raw[stored.offset + 5] ^= 1
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        os.truncate(path, stored.offset + stored.length - 1)
    else:
        path.unlink()
    expected = {"flip": "checksum", "truncate": "truncated", "delete": "missing"}[damage]
    dest = torch.zeros(4, 4, dtype=torch.int32)
    with pytest.raises(CorruptCheckpointError, match=rf"d\.bin.*'w' chunk.*{expected}"):
        dio.read_into([_request(path, stored, chunk, dio.Target(Box.full((4, 4)), dest))])


def test_request_rejects_inconsistent_length(tmp_path: Path) -> None:
    with pytest.raises(InvalidMetadataError, match="expected 16 bytes"):
        dio.ReadRequest(str(tmp_path), 0, 15, (4,), torch.float32, ())


class _DeferredCopier:
    """A fake asynchronous device copy: copies run only when waited for."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], object]] = []
        self.copies = 0

    def copy(self, dest: torch.Tensor, src: torch.Tensor) -> object:
        self.pending.append(lambda: dest.copy_(src))
        self.copies += 1
        return len(self.pending)

    def wait(self, token: object) -> None:
        assert isinstance(token, int)
        for run in self.pending[:token]:
            run()
        self.pending[:token] = [lambda: None] * token

    def synchronize(self) -> None:
        self.wait(len(self.pending))


@pytest.mark.parametrize("coalesce", [0, 2 * 60])
@pytest.mark.parametrize("verify", [True, False])
def test_staging_waits_before_reusing_a_buffer(tmp_path: Path, verify: bool, coalesce: int) -> None:
    chunks = [_values((5, 3), torch.float32, seed=i) for i in range(7)]
    path = tmp_path / "d.bin"
    with dio.DataFileWriter(path) as out:
        ranges = [out.write_tensor(c) for c in chunks]
    dests = [torch.zeros(3, 5).t() for _ in chunks]
    copiers: list[_DeferredCopier] = []

    def make() -> _DeferredCopier:
        copiers.append(_DeferredCopier())
        return copiers[-1]

    requests = [
        _request(path, r, c, dio.Target(Box.full((5, 3)), d))
        for c, r, d in zip(chunks, ranges, dests, strict=True)
    ]
    dio.read_into(requests, verify=verify, stage_all=True, copier=make, coalesce=coalesce)
    assert sum(c.copies for c in copiers) == len(chunks)
    for c, d in zip(chunks, dests, strict=True):
        assert torch.equal(c.view(torch.int32), d.view(torch.int32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_destinations(tmp_path: Path) -> None:
    chunks = [_values((64, 33), torch.bfloat16, seed=i) for i in range(5)]
    path = tmp_path / "d.bin"
    with dio.DataFileWriter(path) as out:
        ranges = [out.write_tensor(c) for c in chunks]
    sub = Box((3, 1), (50, 30))
    dests = [torch.zeros(sub.sizes, dtype=torch.bfloat16, device="cuda") for _ in chunks]
    requests = [
        _request(path, r, c, dio.Target(sub, d))
        for c, r, d in zip(chunks, ranges, dests, strict=True)
    ]
    dio.read_into(requests, thread_count=2, verify=True)
    for c, d in zip(chunks, dests, strict=True):
        assert torch.equal(d.cpu().view(torch.int16), _region(c, sub).view(torch.int16))


# --------------------------------------------------------------------------- thread pool


class _Recorder:
    def __init__(self, fail_at: int, started: list[int], closed: list[int]) -> None:
        self.fail_at, self.started, self.closed = fail_at, started, closed

    def __call__(self, item: int) -> int:
        self.started.append(item)
        if item == self.fail_at:
            _fail_deep_in_worker(item)
        return item * 2

    def close(self) -> None:
        self.closed.append(1)


def _fail_deep_in_worker(item: int) -> None:
    raise OSError(f"item {item} failed")


def test_parallel_map_results_in_order() -> None:
    started: list[int] = []
    closed: list[int] = []
    out = dio.parallel_map(list(range(20)), lambda: _Recorder(-1, started, closed), thread_count=3)
    assert out == [2 * i for i in range(20)]
    assert sorted(started) == list(range(20))
    assert len(closed) == 3


def test_parallel_map_stops_after_failure() -> None:
    started: list[int] = []
    closed: list[int] = []
    with pytest.raises(OSError, match="item 3 failed"):
        dio.parallel_map(list(range(10)), lambda: _Recorder(3, started, closed), thread_count=1)
    assert started == [0, 1, 2, 3]
    assert closed == [1]


def test_parallel_map_keeps_worker_traceback() -> None:
    gate = threading.Barrier(2)

    class Both:
        def __call__(self, item: int) -> None:
            gate.wait(timeout=30)  # both threads are inside an item: both fail
            _fail_deep_in_worker(item)

        def close(self) -> None:
            pass

    with pytest.raises(OSError, match="failed") as info:
        dio.parallel_map([0, 1], Both, thread_count=2)
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "_fail_deep_in_worker" in frames
    assert any("also failed" in note for note in info.value.__notes__)


@pytest.mark.parametrize("count", [0, 1])
def test_single_element_views_with_odd_strides(tmp_path: Path, count: int) -> None:
    # A tensor of at most one element is contiguous whatever its stride.
    source = torch.arange(10, dtype=torch.int16)[3::4][:count]
    assert source.is_contiguous()
    path = tmp_path / "d.bin"
    with dio.DataFileWriter(path) as out:
        stored = out.write_tensor(source)
    assert path.read_bytes() == _bytes(source)
    dest = torch.zeros(10, dtype=torch.int16)[1::4][:count]
    dio.read_into([_request(path, stored, source.clone(), dio.Target(Box.full((count,)), dest))])
    assert torch.equal(dest, source)


@pytest.mark.parametrize(
    "tensor",
    [
        torch.empty(0, dtype=torch.uint16)[::2],
        torch.empty(0, dtype=torch.float32).as_strided((0,), (3,)),
        torch.empty(3, 0, 5, dtype=torch.bfloat16)[:, :, ::2],
        torch.empty(0, 4, dtype=torch.complex64).t()[::2],
        torch.empty(2, 4, dtype=torch.bool)[:, :0:2],
    ],
    ids=["1d-step2", "as-strided", "3d-step2", "transposed", "bool"],
)
def test_tensor_bytes_of_empty_tensors_with_any_stride(
    tmp_path: Path, tensor: torch.Tensor
) -> None:
    assert tensor.numel() == 0
    view = dio.tensor_bytes(tensor)
    assert (len(view), bytes(view)) == (0, b"")
    with dio.DataFileWriter(tmp_path / "d.bin") as out:
        stored = out.write_tensor(tensor)
    assert (stored.length, stored.checksum) == (0, dio.checksum(b""))


# --------------------------------------------------------------------------- direct run reads


def _element_offsets(chunk_sizes: tuple[int, ...], sub: Box) -> list[int]:
    """Brute force: the element offsets of ``sub`` in a row-major chunk, in row-major order."""
    index = torch.arange(Box.full(chunk_sizes).numel).reshape(chunk_sizes)
    return _region(index, sub).reshape(-1).tolist()


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
    runs = _runs.plan_runs(shape, sub, itemsize)
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
    chunk = _values(shape, dtype, seed=len(shape))
    path = tmp_path / f"{uuid.uuid4().hex}.bin"
    stored = _store(path, chunk)
    subs = [data.draw(_sub_boxes(shape), label=f"sub{i}") for i in range(count)]
    targets = [dio.Target(s, torch.full(s.sizes, 1, dtype=dtype)) for s in subs]
    with (
        mock.patch.object(_runs, "MIN_RUN", 1),  # every run takes the direct path
        mock.patch.object(_runs, "IOV_MAX", iov_max),
        mock.patch.object(_runs, "MAX_GAP", max_gap),
    ):
        dio.read_into([_request(path, stored, chunk, *targets)], verify=False)
    for t in targets:
        assert _bytes(t.dest) == _bytes(_region(chunk, t.sub)), t.sub


def _recording_preadv(monkeypatch: pytest.MonkeyPatch, most: int | None = None) -> list[list[int]]:
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
    rows, cols = 16, 2 * _runs.MIN_RUN  # a bf16 half row is exactly MIN_RUN bytes
    chunk = _values((rows, cols), torch.bfloat16)
    stored = _store(tmp_path / "d.bin", chunk)
    halves = [Box((0, h * cols // 2), (rows, cols // 2)) for h in range(2)]
    targets = [dio.Target(b, torch.zeros(b.sizes, dtype=torch.bfloat16)) for b in halves]
    calls = _recording_preadv(monkeypatch)
    request = _request(tmp_path / "d.bin", stored, chunk, *targets)
    dio.read_into([request], verify=False, opener=_PreadOnly)
    # One call, one buffer per half row in file order, no scratch: every byte read once.
    assert calls == [[cols] * (2 * rows)]
    _assert_filled(chunk, targets)

    calls.clear()
    left = dio.Target(halves[0], torch.zeros(halves[0].sizes, dtype=torch.bfloat16))
    request = _request(tmp_path / "d.bin", stored, chunk, left)
    dio.read_into([request], verify=False, opener=_PreadOnly)
    # The right halves between two left halves go to scratch, in the same call.
    assert calls == [[cols, cols] * (rows - 1) + [cols]]
    assert torch.equal(left.dest.view(torch.int16), chunk[:, : cols // 2].view(torch.int16))


def test_short_runs_and_verified_reads_are_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = _values((8, 64), torch.float32)  # a half row is 128 bytes: under MIN_RUN
    stored = _store(tmp_path / "d.bin", chunk)
    sub = Box((0, 0), (8, 32))
    calls = _recording_preadv(monkeypatch)
    for opener in (_PreadOnly, dio.LocalFile):
        for verify in (False, True):
            dest = torch.zeros(sub.sizes)
            request = _request(tmp_path / "d.bin", stored, chunk, dio.Target(sub, dest))
            dio.read_into([request], verify=verify, opener=opener)
            assert torch.equal(dest.view(torch.int32), chunk[:, :32].view(torch.int32))
    span = byte_span((8, 64), sub, 4)[1]
    # Unmappable: one staging read each (the span, the whole item). Mapped: no read at all.
    assert calls == [[span], [stored.length]]


def test_large_gaps_start_a_new_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunk = _values((4, 6, 3), torch.int8)
    stored = _store(tmp_path / "d.bin", chunk)
    sub = Box((1, 2, 0), (3, 2, 3))  # runs of 6 bytes; gaps of 12 bytes, 12 again between rows
    dest = torch.zeros(sub.sizes, dtype=torch.int8)
    calls = _recording_preadv(monkeypatch)
    with mock.patch.object(_runs, "MIN_RUN", 1), mock.patch.object(_runs, "MAX_GAP", 11):
        request = _request(tmp_path / "d.bin", stored, chunk, dio.Target(sub, dest))
        dio.read_into([request], verify=False, opener=_PreadOnly)
    assert calls == [[6], [6], [6]]
    assert torch.equal(dest, chunk[1:, 2:4])


def test_interrupted_vectored_reads_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows, cols = 6, _runs.MIN_RUN
    chunk = _values((rows, cols), torch.int16)
    path = tmp_path / "d.bin"
    stored = _store(path, chunk)
    sub = Box((1, 0), (4, cols // 2))
    dest = torch.zeros(sub.sizes, dtype=torch.int16)
    calls = _recording_preadv(monkeypatch, most=1000)
    request = _request(path, stored, chunk, dio.Target(sub, dest))
    dio.read_into([request], verify=False, opener=_PreadOnly)
    assert torch.equal(dest, chunk[1:5, : cols // 2])
    assert len(calls) > 1
    os.truncate(path, stored.offset + stored.length - 4 * cols)  # rows 4 and 5 are gone
    with pytest.raises(CorruptCheckpointError, match=r"'w' chunk is truncated"):
        dio.read_into([_request(path, stored, chunk, dio.Target(sub, dest))], verify=False)


# --- coalesced reads (object stores: one round trip for neighbouring items) -------------------


def _small_items(path: Path, count: int) -> tuple[list[torch.Tensor], list[dio.StoredRange]]:
    chunks = [_values((3, 5), torch.float32, seed=i) for i in range(count)]
    with dio.DataFileWriter(path) as out:
        ranges = [out.write_tensor(c) for c in chunks]
    return chunks, ranges


def _requests_for(
    path: Path, chunks: list[torch.Tensor], ranges: list[dio.StoredRange], dests: list[torch.Tensor]
) -> list[dio.ReadRequest]:
    return [
        _request(path, r, c, dio.Target(Box.full((3, 5)), d))
        for c, r, d in zip(chunks, ranges, dests, strict=True)
    ]


@pytest.mark.parametrize("verify", [True, False])
def test_coalesced_items_are_fetched_by_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verify: bool
) -> None:
    path = tmp_path / "d.bin"
    chunks, ranges = _small_items(path, 6)
    dests = [torch.zeros(5, 3).t() if i % 2 else torch.zeros(3, 5) for i in range(6)]
    calls = _recording_preadv(monkeypatch)
    requests = _requests_for(path, chunks, ranges, dests)
    # 4 items fit 4 * 60 bytes; the next batch starts at the fifth.
    dio.read_into(requests[::-1], verify=verify, opener=_PreadOnly, coalesce=4 * 60)
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
        dio.read_into(requests, opener=_PreadOnly, coalesce=1 << 20)
    os.truncate(path, ranges[3].offset + 10)
    with pytest.raises(CorruptCheckpointError, match=r"item item 3 is truncated"):
        dio.read_into(requests, verify=False, opener=_PreadOnly, coalesce=1 << 20)


@given(
    spans=st.lists(
        st.tuples(st.sampled_from("ab"), st.integers(0, 50), st.integers(0, 3)), max_size=12
    ),
    limit=st.integers(0, 60),
)
def test_batches_partition_requests_in_order_within_the_limit(
    spans: list[tuple[str, int, int]], limit: int
) -> None:
    from dcp_impl.io._read import _batches

    ordered = sorted(
        (dio.ReadRequest(p, o, 4 * n, (n,), torch.float32, ()) for p, o, n in spans),
        key=lambda r: (r.path, r.offset),
    )
    batches = _batches(ordered, limit)
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
        _values((2, 2), torch.float64, seed=1),
        _values((3,), torch.int16, seed=2),
        _values((2, 3), torch.complex64, seed=3),
    ]
    with dio.DataFileWriter(path) as out:
        ranges = [out.write_tensor(c) for c in chunks]
    assert ranges[1].offset % 8 != 0  # after 3 bools
    dests = [torch.zeros_like(c) for c in chunks]
    requests = [
        _request(path, r, c, dio.Target(Box.full(tuple(c.shape)), d))
        for c, r, d in zip(chunks, ranges, dests, strict=True)
    ]
    for verify in (True, False):
        dio.read_into(requests, verify=verify, opener=_PreadOnly, coalesce=1 << 20)
        assert all(_bytes(d) == _bytes(c) for c, d in zip(chunks, dests, strict=True))


def test_a_file_that_cannot_be_mapped_is_read_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = _values((16, 32), torch.bfloat16)
    stored = _store(tmp_path / "d.bin", chunk)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(19, "No such device")  # what mmap gives on a file system without it

    monkeypatch.setattr(mmap, "mmap", refuse)
    counts = _counting_preadv(monkeypatch)
    for verify in (True, False):
        targets = _two_sub_boxes(chunk)
        dio.read_into([_request(tmp_path / "d.bin", stored, chunk, *targets)], verify=verify)
        _assert_filled(chunk, targets)
    assert counts  # the bytes came through preadv
