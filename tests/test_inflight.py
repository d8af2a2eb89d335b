"""``max_inflight_bytes``: a cap on the host memory a load holds beyond its destinations.

The budget never lets its holders exceed the cap plus one buffer; capped reads fill their
targets exactly as uncapped ones; the option is checked where it is given; and a 256 MiB
load capped at 16 MiB, measured in a process of its own, peaks within the bound below
(where the same load without the cap holds every file it read).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import _inflight
import pytest
import torch
from _reads import assert_filled, chunk_values, read_request, sub_boxes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dcp_impl
from dcp_impl import transfer
from dcp_impl.errors import InvalidOptionError
from dcp_impl.store import DataFileWriter, LocalFile
from dcp_impl.transfer.plans import Budget, slices

MIB = 1 << 20
TESTS = Path(__file__).resolve().parent

# ------------------------------------------------------------------ the budget


def test_an_acquisition_that_fits_is_granted_at_once() -> None:
    budget = Budget(10)
    budget.acquire(4)
    budget.acquire(6)
    assert budget.held == 10
    budget.release(10)
    assert budget.held == 0
    assert budget.peak == 10


def test_one_buffer_over_the_cap_waits_until_it_is_alone() -> None:
    budget = Budget(10)
    budget.acquire(3)
    granted = threading.Event()

    def big() -> None:
        budget.acquire(25)
        granted.set()
        budget.release(25)

    thread = threading.Thread(target=big)
    thread.start()
    assert not granted.wait(0.2)  # 3 are held: 25 more must wait
    budget.release(3)
    thread.join(10)
    assert granted.is_set()
    assert budget.peak == 25


def test_a_thread_gives_back_what_it_holds_idle_before_it_waits() -> None:
    budget = Budget(10)
    budget.acquire(8)
    dropped: list[int] = []
    budget.acquire(1, before_wait=lambda: dropped.append(1))  # fits: no wait, no drop
    assert dropped == []

    def drop() -> None:
        dropped.append(9)
        budget.release(9)  # this thread's idle buffers: the wait ends at once

    budget.acquire(5, before_wait=drop)
    assert dropped == [9]
    assert budget.held == 5


@settings(max_examples=25, deadline=None)
@given(
    cap=st.integers(8, 64),
    sizes=st.lists(st.lists(st.integers(1, 100), min_size=1, max_size=8), min_size=1, max_size=4),
)
def test_threads_never_hold_more_than_the_cap_or_one_buffer_alone(
    cap: int, sizes: list[list[int]]
) -> None:
    budget = Budget(cap)
    worst = [0]
    lock = threading.Lock()

    def work(mine: list[int]) -> None:
        for n in mine:
            budget.acquire(n)
            with lock:
                worst[0] = max(worst[0], budget.held)
            time.sleep(0)
            budget.release(n)

    threads = [threading.Thread(target=work, args=(mine,)) for mine in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a wait never ended"
    largest = max(n for mine in sizes for n in mine)
    assert budget.peak <= max(cap, largest), (budget.peak, cap, largest)
    assert budget.held == 0


@given(
    lengths=st.lists(st.integers(0, 50), max_size=6),
    limit=st.integers(1, 40),
)
def test_slices_cut_buffers_into_groups_within_the_limit(lengths: list[int], limit: int) -> None:
    buffers = [memoryview(bytearray(n)) for n in lengths]
    groups = list(slices(buffers, limit))
    position = 0
    for start, group in groups:
        size = sum(len(view) for view in group)
        assert start == position
        assert 0 < size <= limit
        position += size
    assert position == sum(lengths)
    assert all(size == limit for size in [sum(map(len, g)) for _, g in groups[:-1]])


# ------------------------------------------------------------------ capped reads


class _Recording:
    """A local file read without a mapping (as an object store is), recording each call's
    bytes: under a cap, none may exceed the thread's share."""

    calls: list[int]

    def __init__(self, path: str) -> None:
        self._file = LocalFile(path)

    def preadv(self, buffers: list[memoryview], offset: int) -> int:
        type(self).calls.append(sum(len(b) for b in buffers))
        return self._file.preadv(buffers, offset)

    def close(self) -> None:
        self._file.close()


SHAPES = [(20, 30), (30, 20), (600, 300)]  # 1.2 KiB, 1.2 KiB, 351 KiB of bfloat16


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), verify=st.booleans(), mapped=st.booleans(), threads=st.integers(1, 3))
def test_capped_reads_fill_their_targets_exactly(
    tmp_path: Path, data: st.DataObject, verify: bool, mapped: bool, threads: int
) -> None:
    # Two small items (coalesced into one read) and one larger than a thread's share, in one file.
    path = tmp_path / f"{uuid.uuid4().hex}.bin"  # a fresh file per example
    values = [chunk_values(shape, torch.bfloat16, seed=i) for i, shape in enumerate(SHAPES)]
    with DataFileWriter(path, sync=False) as out:
        out.write_bytes(b"header")
        stored = [out.write_tensor(chunk) for chunk in values]
    chunks, requests = [], []
    for i, (chunk, where) in enumerate(zip(values, stored, strict=True)):
        subs = [data.draw(sub_boxes(tuple(chunk.shape)), label=f"sub {i}") for _ in range(2)]
        targets = [transfer.Target(s, torch.zeros(s.sizes, dtype=chunk.dtype)) for s in subs]
        chunks.append((chunk, targets))
        requests.append(read_request(path, where, chunk, *targets))
    _Recording.calls = []
    transfer.read_into(
        requests,
        thread_count=threads,
        verify=verify,
        opener=LocalFile if mapped else _Recording,
        coalesce=4 * MIB,
        max_inflight_bytes=transfer.MIN_INFLIGHT_BYTES,
    )
    for chunk, targets in chunks:
        assert_filled(chunk, targets)
    assert all(n <= transfer.MIN_INFLIGHT_BYTES // 3 for n in _Recording.calls), _Recording.calls


# ------------------------------------------------------------------ the option


@pytest.mark.parametrize("value", [0, MIB - 1, -5, 2.5 * MIB, "16MiB", True])
@pytest.mark.parametrize(
    "make",
    [
        lambda path, v: dcp_impl.FileSystemReader(path, max_inflight_bytes=v),
        lambda path, v: dcp_impl.HuggingFaceReader(path, max_inflight_bytes=v),
        lambda path, v: transfer.read_into([], max_inflight_bytes=v, opener=LocalFile),
    ],
    ids=["FileSystemReader", "HuggingFaceReader", "read_into"],
)
def test_a_cap_below_1_mib_or_not_an_int_is_refused(tmp_path: Path, make: Any, value: Any) -> None:
    with pytest.raises(
        InvalidOptionError,
        match=r"max_inflight_bytes expected None or an int >= 1048576 \(1 MiB\), got",
    ) as info:
        make(str(tmp_path), value)
    assert isinstance(info.value, ValueError)


def test_readers_keep_a_valid_cap(tmp_path: Path) -> None:
    assert dcp_impl.FileSystemReader(tmp_path, max_inflight_bytes=MIB).max_inflight_bytes == MIB
    assert dcp_impl.HuggingFaceReader(tmp_path).max_inflight_bytes is None


# ------------------------------------------------------------------ peak resident memory

CAP = 16 * MIB
SLACK = 8 * MIB
"""What a load allocates besides its buffers: plans, metadata, thread stacks, the copy a
store's read makes (at most a slice each, inside the cap's reserved third)."""
BOUND = CAP + _inflight.ITEM + SLACK
"""The bound on (peak resident memory during the load) - (resident memory with every
destination allocated and touched, just before it): the cap, plus one buffer (a stored item,
staged whole to be verified before any byte is used), plus :data:`SLACK`."""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("inflight")
    paths = {}
    for backend in ("fs", "hf"):
        paths[backend] = str(root / backend)
        _inflight.save(paths[backend], backend)
    return paths


def _measure(location: str, backend: str, cap: int | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "_inflight", location, "--backend", backend]
    if cap is not None:
        command += ["--cap", str(cap)]
    paths = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    ("backend", "url"),
    [("fs", False), ("fs", True), ("hf", False)],
    ids=["fs-local-mapped", "fs-fsspec-coalesced", "hf-local-mapped"],
)
def test_a_capped_load_peaks_within_the_cap_plus_one_buffer(
    checkpoints: dict[str, str], backend: str, url: bool
) -> None:
    location = f"file://{checkpoints[backend]}" if url else checkpoints[backend]
    result = _measure(location, backend, CAP)
    held = result["peak"] - result["start"]
    assert result["exact"], "the capped load loaded other values"
    assert held <= BOUND, f"held {held / MIB:.1f} MiB over the destinations, bound {BOUND / MIB}"


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_without_the_cap_the_same_load_holds_every_file_it_reads(
    checkpoints: dict[str, str],
) -> None:
    # The measured path is one where the cap matters: uncapped, the files stay mapped.
    result = _measure(checkpoints["fs"], "fs", None)
    assert result["peak"] - result["start"] > 4 * BOUND
