"""Tests of dcp_impl.transfer: atomic commit, data-file writing, byte-range reads, thread pool."""

from __future__ import annotations

import os
import threading
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import xxhash
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcp_impl import transfer
from dcp_impl.errors import CorruptCheckpointError, InvalidMetadataError, UnsupportedError
from dcp_impl.layout import Box, byte_span
from dcp_impl.store import DataFileWriter, LocalFile, atomic_write
from dcp_impl.testing import tuned

# --------------------------------------------------------------------------- commit & write


def test_atomic_write_replaces_file(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    atomic_write(target, b"old")
    atomic_write(target, b"new", sync=False)
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["m.json"]


def test_atomic_write_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m.json"
    atomic_write(target, b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.json"], "the temp file must be removed"


def test_writer_stores_logical_values_with_checksums(tmp_path: Path) -> None:
    base = chunk_values((4, 6), torch.complex64)
    items = [base.t(), base[::2, 1:], torch.tensor(7, dtype=torch.int16), base.conj(), -base]
    path = tmp_path / "d.bin"
    with DataFileWriter(path) as out:
        ranges = [out.write_tensor(t) for t in items]
    data = path.read_bytes()
    offset = 0
    for t, r in zip(items, ranges, strict=True):
        expected = bytes_of(t.resolve_conj().resolve_neg())
        assert (r.offset, r.length) == (offset, len(expected))
        assert data[r.offset : r.offset + r.length] == expected
        assert r.checksum == f"xxh3_64:{xxhash.xxh3_64(expected).hexdigest()}"
        offset += r.length
    assert len(data) == offset


def test_writer_never_overwrites_and_discards_on_error(tmp_path: Path) -> None:
    path = tmp_path / "d.bin"
    path.write_bytes(b"user data")
    with pytest.raises(FileExistsError):
        DataFileWriter(path)
    assert path.read_bytes() == b"user data"
    fresh = tmp_path / "e.bin"

    def write_then_fail() -> None:
        with DataFileWriter(fresh) as out:
            out.write_bytes(b"partial")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert not fresh.exists()


def test_writer_rejects_sparse_tensors(tmp_path: Path) -> None:
    with DataFileWriter(tmp_path / "d.bin") as out, pytest.raises(UnsupportedError):
        out.write_tensor(torch.eye(3).to_sparse())


# --------------------------------------------------------------------------- reads


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
    chunk = chunk_values(shape, dtype, seed=len(shape))
    path = tmp_path / f"{uuid.uuid4().hex}.bin"  # tmp_path is shared by all examples
    stored = store_chunk(path, chunk)
    sub = data.draw(sub_boxes(shape), label="sub")
    dest = torch.zeros(sub.sizes, dtype=dtype)
    if strided_dest:  # a transposed view of a contiguous buffer
        dest = torch.zeros(sub.sizes[::-1], dtype=dtype).permute(tuple(reversed(range(len(shape)))))
    with tuned(stage_all=stage_all):
        transfer.read_into(
            [read_request(path, stored, chunk, transfer.Target(sub, dest))],
            verify=verify,
            opener=LocalFile,
        )
    assert bytes_of(dest) == bytes_of(region(chunk, sub))


def test_read_converts_to_destination_dtype(tmp_path: Path) -> None:
    chunk = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    stored = store_chunk(tmp_path / "d.bin", chunk)
    dest = torch.zeros(2, 3, dtype=torch.float64)
    transfer.read_into(
        [read_request(tmp_path / "d.bin", stored, chunk, transfer.Target(Box.full((2, 3)), dest))],
        opener=LocalFile,
    )
    assert torch.equal(dest, chunk.double())


def test_unverified_partial_read_reads_only_the_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = chunk_values((16, 32), torch.bfloat16)
    stored = store_chunk(tmp_path / "d.bin", chunk)
    counts = counting_preadv(monkeypatch)
    targets = two_sub_boxes(chunk)
    request = read_request(tmp_path / "d.bin", stored, chunk, *targets)
    transfer.read_into([request], verify=False, opener=PreadOnly)
    spans = [byte_span((16, 32), t.sub, 2)[1] for t in targets]
    assert sum(counts) == sum(spans) < stored.length
    assert_filled(chunk, targets)


def test_mapped_partial_read_copies_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Local files map: short runs are copied out of the mapping (touching only their pages),
    # long runs still land by preadv straight in their destination.
    chunk = chunk_values((16, 32), torch.bfloat16)
    stored = store_chunk(tmp_path / "d.bin", chunk)
    counts = counting_preadv(monkeypatch)
    exact, strided = two_sub_boxes(chunk)
    transfer.read_into(
        [read_request(tmp_path / "d.bin", stored, chunk, exact, strided)],
        verify=False,
        opener=LocalFile,
    )
    assert counts == [byte_span((16, 32), exact.sub, 2)[1]]
    assert_filled(chunk, [exact, strided])


def test_verified_partial_read_checks_the_whole_item(tmp_path: Path) -> None:
    chunk = chunk_values((8, 8), torch.float32)
    path = tmp_path / "d.bin"
    stored = store_chunk(path, chunk)
    sub = Box((0, 0), (1, 8))
    with open(path, "r+b") as f:  # corrupt the last byte: outside the sub-box's span
        f.seek(stored.offset + stored.length - 1)
        last = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([last[0] ^ 0xFF]))

    def read(verify: bool) -> torch.Tensor:
        dest = torch.zeros(1, 8)
        transfer.read_into(
            [read_request(path, stored, chunk, transfer.Target(sub, dest))],
            verify=verify,
            opener=LocalFile,
        )
        return dest

    assert torch.equal(read(verify=False).view(torch.int32), chunk[:1].view(torch.int32))
    with pytest.raises(CorruptCheckpointError, match=r"d\.bin: item 'w' chunk .*checksum"):
        read(verify=True)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_data_is_reported(tmp_path: Path, damage: str) -> None:
    chunk = chunk_values((4, 4), torch.int32)
    path = tmp_path / "d.bin"
    stored = store_chunk(path, chunk)
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
        transfer.read_into(
            [read_request(path, stored, chunk, transfer.Target(Box.full((4, 4)), dest))],
            opener=LocalFile,
        )


def test_request_rejects_inconsistent_length(tmp_path: Path) -> None:
    with pytest.raises(InvalidMetadataError, match="expected 16 bytes"):
        transfer.ReadRequest(str(tmp_path), 0, 15, (4,), torch.float32, ())


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
    chunks = [chunk_values((5, 3), torch.float32, seed=i) for i in range(7)]
    path = tmp_path / "d.bin"
    with DataFileWriter(path) as out:
        ranges = [out.write_tensor(c) for c in chunks]
    dests = [torch.zeros(3, 5).t() for _ in chunks]
    copiers: list[_DeferredCopier] = []

    def make() -> _DeferredCopier:
        copiers.append(_DeferredCopier())
        return copiers[-1]

    requests = [
        read_request(path, r, c, transfer.Target(Box.full((5, 3)), d))
        for c, r, d in zip(chunks, ranges, dests, strict=True)
    ]
    with tuned(stage_all=True, copier=make):
        transfer.read_into(requests, verify=verify, coalesce=coalesce, opener=LocalFile)
    assert sum(c.copies for c in copiers) == len(chunks)
    for c, d in zip(chunks, dests, strict=True):
        assert torch.equal(c.view(torch.int32), d.view(torch.int32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_destinations(tmp_path: Path) -> None:
    chunks = [chunk_values((64, 33), torch.bfloat16, seed=i) for i in range(5)]
    path = tmp_path / "d.bin"
    with DataFileWriter(path) as out:
        ranges = [out.write_tensor(c) for c in chunks]
    sub = Box((3, 1), (50, 30))
    dests = [torch.zeros(sub.sizes, dtype=torch.bfloat16, device="cuda") for _ in chunks]
    requests = [
        read_request(path, r, c, transfer.Target(sub, d))
        for c, r, d in zip(chunks, ranges, dests, strict=True)
    ]
    transfer.read_into(requests, thread_count=2, verify=True, opener=LocalFile)
    for c, d in zip(chunks, dests, strict=True):
        assert torch.equal(d.cpu().view(torch.int16), region(c, sub).view(torch.int16))


# ------------------------------------------------- the reading threads (through read_into)


def _fail_deep_in_worker(path: str) -> None:
    raise OSError(f"{os.path.basename(path)} failed")


class _Files:
    """An opener over local files that records each open and close, and fails the read of
    ``failing`` (after ``gate``, where given: both threads are then inside a read)."""

    def __init__(self, failing: set[str], gate: threading.Barrier | None = None) -> None:
        self.failing, self.gate = failing, gate
        self.opened: list[str] = []
        self.closed: list[str] = []

    def __call__(self, path: str) -> transfer.Source:
        files = self

        class _Source(LocalFile):
            def preadv(self, buffers: list[memoryview], offset: int) -> int:
                if files.gate is not None:
                    files.gate.wait(timeout=30)
                if os.path.basename(path) in files.failing:
                    _fail_deep_in_worker(path)
                return super().preadv(buffers, offset)

            def mapped(self) -> memoryview | None:
                return None  # every byte goes through preadv

            def close(self) -> None:
                files.closed.append(path)
                super().close()

        self.opened.append(path)
        return _Source(path)


def _one_item_files(tmp_path: Path, count: int) -> list[transfer.ReadRequest]:
    requests = []
    for i in range(count):
        chunk = torch.full((4,), i, dtype=torch.int32)
        stored = store_chunk(tmp_path / f"f{i:02d}", chunk)
        dest = torch.zeros(4, dtype=torch.int32)
        requests.append(
            read_request(
                tmp_path / f"f{i:02d}", stored, chunk, transfer.Target(Box.full((4,)), dest)
            )
        )
    return requests


def test_every_request_is_read_on_the_threads_and_every_file_closed(tmp_path: Path) -> None:
    requests = _one_item_files(tmp_path, 20)
    files = _Files(set())
    transfer.read_into(requests, thread_count=3, verify=True, opener=files)
    assert all(torch.equal(r.targets[0].dest, torch.full((4,), i)) for i, r in enumerate(requests))
    assert sorted(files.opened) == sorted(files.closed) == sorted(r.path for r in requests)


def test_a_failing_read_stops_new_work_and_reaches_the_caller(tmp_path: Path) -> None:
    requests = _one_item_files(tmp_path, 10)
    files = _Files({"f03"})
    with pytest.raises(OSError, match="f03 failed"):
        transfer.read_into(requests, thread_count=1, verify=True, opener=files)
    assert [os.path.basename(p) for p in files.opened] == ["f00", "f01", "f02", "f03"]
    assert sorted(files.closed) == sorted(files.opened)


def test_a_failing_read_keeps_its_worker_traceback(tmp_path: Path) -> None:
    requests = _one_item_files(tmp_path, 2)
    files = _Files({"f00", "f01"}, gate=threading.Barrier(2))
    with pytest.raises(OSError, match="failed") as info:
        transfer.read_into(requests, thread_count=2, verify=True, opener=files)
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "_fail_deep_in_worker" in frames
    assert any("also failed" in note for note in info.value.__notes__)


@pytest.mark.parametrize("count", [0, 1])
def test_single_element_views_with_odd_strides(tmp_path: Path, count: int) -> None:
    # A tensor of at most one element is contiguous whatever its stride.
    source = torch.arange(10, dtype=torch.int16)[3::4][:count]
    assert source.is_contiguous()
    path = tmp_path / "d.bin"
    with DataFileWriter(path) as out:
        stored = out.write_tensor(source)
    assert path.read_bytes() == bytes_of(source)
    dest = torch.zeros(10, dtype=torch.int16)[1::4][:count]
    transfer.read_into(
        [read_request(path, stored, source.clone(), transfer.Target(Box.full((count,)), dest))],
        opener=LocalFile,
    )
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
    view = transfer.tensor_bytes(tensor)
    assert (len(view), bytes(view)) == (0, b"")
    with DataFileWriter(tmp_path / "d.bin") as out:
        stored = out.write_tensor(tensor)
    assert (stored.length, stored.checksum) == (0, transfer.checksum(b""))
