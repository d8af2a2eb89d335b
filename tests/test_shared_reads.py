"""Shared reads (``share_reads="shm"``): each stored item several ranks of a host need is read
from storage once and taken by the others from shared memory; ranks played in one process."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, ReadItem

import dcp_impl
from dcp_impl import transfer
from dcp_impl.errors import (
    CorruptCheckpointError,
    InvalidOptionError,
    SharedReadError,
    SharedReadTimeoutError,
)
from dcp_impl.store import LocalStore, Store
from dcp_impl.testing import CountingStore
from spec_tests.sim import driver

pytestmark = pytest.mark.skipif(not os.path.isdir(transfer.SHM_ROOT), reason="no /dev/shm")

READERS = [dcp_impl.FileSystemReader, dcp_impl.HuggingFaceReader]


def _segments() -> set[str]:
    """The segments this process joined (its ranks mark them with its pid): another xdist
    worker's loads, running meanwhile, have segments too."""
    ours = set()
    for name in os.listdir(transfer.SHM_ROOT):
        if name.startswith("dcp_impl-"):
            with contextlib.suppress(OSError):
                folder = Path(transfer.SHM_ROOT) / name
                marks = [p.read_text() for p in folder.glob("pid-*")]
                if str(os.getpid()) in marks:
                    ours.add(name)
    return ours


@pytest.fixture(autouse=True)
def no_segment_left() -> Iterator[None]:
    before = _segments()
    yield
    assert _segments() <= before, "a shared-memory segment was left behind"


def _state(seed: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(96, 40, generator=g),
        "e": torch.randint(0, 255, (33,), generator=g, dtype=torch.uint8),
        "h": torch.randn(7, 5, generator=g).to(torch.bfloat16),
        "s": torch.tensor(3.5),
        "z": torch.zeros(0, 4),
    }


def _blank(state: dict[str, Any]) -> dict[str, Any]:
    return {k: torch.full_like(v, 7) for k, v in state.items()}


def _save(path: Path, state: dict[str, Any], *, hf: bool = False) -> int:
    writer = dcp_impl.HuggingFaceWriter(str(path)) if hf else dcp_impl.FileSystemWriter(str(path))
    driver.save([writer], str(path), [DefaultSavePlanner()], [state])
    return sum(v.numel() * v.element_size() for v in state.values())  # the bytes stored


def _load(readers: list[Any], where: Path | Store, outs: list[dict[str, Any]]) -> None:
    """``dcp.load`` over ``readers``, reset to ``where`` (a Store stays that store)."""
    checkpoint = where if isinstance(where, Store) else str(where)
    driver.load(readers, checkpoint, [DefaultLoadPlanner() for _ in readers], outs)  # type: ignore[arg-type]


def _futures(
    readers: list[Any],
    path: Path | Store,
    outs: list[dict[str, Any]],
    keep: int = -1,
    planners: list[DefaultLoadPlanner] | None = None,
) -> list[Any]:
    """DCP's load steps over ``readers`` (rank 0 coordinates); ``read_data`` on every rank,
    or only on rank ``keep``: the futures."""
    planners = planners or [DefaultLoadPlanner() for _ in readers]
    local = []
    for rank, (reader, planner, out) in enumerate(zip(readers, planners, outs, strict=True)):
        reader.reset(path if isinstance(path, Store) else str(path))
        metadata = reader.read_metadata()
        planner.set_up_planner(out, metadata, rank == 0)
        reader.set_up_storage_reader(metadata, rank == 0)
        local.append(reader.prepare_local_plan(planner.create_local_plan()))
    plans = readers[0].prepare_global_plan(local)
    return [
        reader.read_data(plan, planner)
        for rank, (reader, planner, plan) in enumerate(zip(readers, planners, plans, strict=True))
        if keep in (-1, rank)
    ]


def _outcomes(futures: list[Any]) -> list[BaseException | None]:
    out: list[BaseException | None] = []
    for future in futures:
        try:
            future.wait()
        except Exception as err:
            out.append(err)
        else:
            out.append(None)
    return out


def _read_bytes(log: Path) -> int:
    return sum(r.length for r in CountingStore.records(log))


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"share_reads": "nfs"}, "share_reads expected None or 'shm', got 'nfs'"),
        ({"share_reads": True}, "share_reads expected None or 'shm', got True"),
        ({"share_reads": "shm", "share_timeout": 0}, "share_timeout expected .* got 0"),
        ({"share_reads": "shm", "share_timeout": True}, "share_timeout expected .* got True"),
        ({"share_timeout": "5"}, "share_timeout expected .* got '5'"),
    ],
)
def test_bad_options_are_refused_at_construction(
    tmp_path: Path, reader: Any, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidOptionError, match=match):
        reader(str(tmp_path), **options)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(world=st.integers(2, 4), seed=st.integers(0, 3), verify=st.sampled_from([True, False]))
def test_replicated_state_is_read_from_storage_once(
    tmp_path_factory: pytest.TempPathFactory, world: int, seed: int, verify: bool
) -> None:
    path = tmp_path_factory.mktemp("ckpt")
    state = _state(seed)
    stored = _save(path, state)
    shares: tuple[tuple[transfer.ShareReads, int], ...] = (("shm", 1), (None, world))
    for share, times in shares:
        log = path.parent / f"{path.name}-{share}.log"
        store = CountingStore(LocalStore(path), log)
        readers = [
            dcp_impl.FileSystemReader(store, share_reads=share, verify=verify) for _ in range(world)
        ]
        outs = [_blank(state) for _ in range(world)]
        _load(readers, store, outs)
        for out in outs:
            for name, value in state.items():
                assert torch.equal(out[name], value), name  # randn: no NaN
        assert _read_bytes(log) == times * stored, (share, world)


def test_hf_replicated_state_is_read_from_storage_once(tmp_path: Path) -> None:
    state = _state(1)
    stored = _save(tmp_path / "hf", state, hf=True)
    log = tmp_path / "reads.log"
    store = CountingStore(LocalStore(tmp_path / "hf"), log)
    readers = [dcp_impl.HuggingFaceReader(store, share_reads="shm") for _ in range(3)]
    outs = [_blank(state) for _ in range(3)]
    _load(readers, store, outs)
    for out in outs:
        assert all(torch.equal(out[k], v) for k, v in state.items())
    assert _read_bytes(log) == stored


def test_option_off_reads_as_before_and_plans_are_untouched(tmp_path: Path) -> None:
    state = _state(2)
    _save(tmp_path / "c", state)
    reader = dcp_impl.FileSystemReader(tmp_path / "c")
    plan = LoadPlan([], storage_data="theirs")
    assert reader.prepare_local_plan(plan) is plan
    assert reader.prepare_global_plan([plan, plan]) == [plan, plan]
    outs = [_blank(state) for _ in range(2)]
    _load([dcp_impl.FileSystemReader(tmp_path / "c") for _ in range(2)], tmp_path / "c", outs)
    assert all(torch.equal(out["w"], state["w"]) for out in outs)


class _FlippingStore(LocalStore):
    """A store whose reads land one wrong byte in each item after reading it: a sharing
    bug (an owner publishing bytes other than those it verified) made visible."""

    def read(self, requests: Any, *, thread_count: int | None = None, verify: bool) -> None:
        super().read(requests, thread_count=thread_count, verify=verify)
        for request in requests:
            for target in request.targets:
                if target.dest.numel():
                    raw = target.dest.reshape(-1).view(torch.uint8)
                    raw[0] ^= 0xFF


def test_bytes_from_a_peer_are_verified(tmp_path: Path) -> None:
    state = {"w": torch.arange(64, dtype=torch.float32)}
    _save(tmp_path / "c", state)
    store = _FlippingStore(tmp_path / "c")
    readers = [dcp_impl.FileSystemReader(store, share_reads="shm") for _ in range(2)]
    outcomes = _outcomes(_futures(readers, store, [_blank(state) for _ in range(2)]))
    # The owner's copy was damaged after its storage read was verified: whoever takes it
    # from the segment finds the mismatch (or, when the other gave up first, learns that).
    assert all(isinstance(e, CorruptCheckpointError | SharedReadError) for e in outcomes)
    assert any(isinstance(e, CorruptCheckpointError) and "item-" in str(e) for e in outcomes)


def test_with_verify_off_a_peer_bug_is_not_caught(tmp_path: Path) -> None:
    # The counterpart: what the check above catches is exactly what verify=False gives up.
    state = {"w": torch.arange(64, dtype=torch.float32)}
    _save(tmp_path / "c", state)
    store = _FlippingStore(tmp_path / "c")
    readers = [dcp_impl.FileSystemReader(store, share_reads="shm", verify=False) for _ in "ab"]
    outs = [_blank(state) for _ in range(2)]
    assert _outcomes(_futures(readers, store, outs)) == [None, None]
    assert not torch.equal(outs[0]["w"], state["w"])


def _corrupt_data(path: Path) -> None:
    data = next(p for p in path.iterdir() if p.name.startswith("data-"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))


def test_a_corrupt_item_fails_every_rank_and_leaves_no_segment(tmp_path: Path) -> None:
    state = _state(3)
    _save(tmp_path / "c", state)
    _corrupt_data(tmp_path / "c")
    readers = [dcp_impl.FileSystemReader(tmp_path / "c", share_reads="shm") for _ in range(3)]
    outcomes = _outcomes(_futures(readers, tmp_path / "c", [_blank(state) for _ in range(3)]))
    assert all(isinstance(e, CorruptCheckpointError | SharedReadError) for e in outcomes)
    assert any(isinstance(e, CorruptCheckpointError) for e in outcomes)


def _plans(world: int, items: int) -> list[LoadPlan]:
    plans = []
    for _ in range(world):
        reads = [
            ReadItem(
                type=LoadItemType.TENSOR,
                dest_index=MetadataIndex(f"t{i}", [0]),
                dest_offsets=torch.Size([0]),
                storage_index=MetadataIndex(f"t{i}", [0], 0),
                storage_offsets=torch.Size([0]),
                lengths=torch.Size([4]),
            )
            for i in range(items)
        ]
        plans.append(transfer.mark_host(LoadPlan(reads)))
    return plans


@given(
    world=st.integers(1, 6),
    sizes=st.lists(st.integers(0, 1 << 20), min_size=1, max_size=12),
    hosts=st.integers(1, 3),
)
def test_every_item_of_a_host_gets_one_owner_among_the_ranks_needing_it(
    world: int, sizes: list[int], hosts: int
) -> None:
    plans = _plans(world, len(sizes))
    # Ranks r with equal r % hosts share a host.
    plans = [
        LoadPlan(p.items, storage_data=transfer.HostTag(f"h{r % hosts}"))
        for r, p in enumerate(plans)
    ]
    out = transfer.share_plans(plans, lambda index: sizes[int(index.fqn[1:])])
    for rank, plan in enumerate(out):
        assert plan.items == plans[rank].items
        share = plan.storage_data
        peers = [r for r in range(world) if r % hosts == rank % hosts]
        if len(peers) < 2 or all(s == 0 for s in sizes):
            assert share is None
            continue
        assert isinstance(share, transfer.SharePlan)
        assert share.rank == rank
        assert set(share.group) == set(peers)
        assert {i.fqn for i in share.owners} == {f"t{k}" for k, s in enumerate(sizes) if s}
        for index, (slot, owner) in share.owners.items():
            assert owner in peers
            theirs = out[owner].storage_data
            assert isinstance(theirs, transfer.SharePlan)
            assert theirs.owners[index] == (slot, owner)
            assert theirs.key == share.key
    # Balanced: the largest share of bytes read exceeds the smallest by at most one item.
    owned: dict[int, int] = {}
    share0 = out[0].storage_data
    if isinstance(share0, transfer.SharePlan):
        for index, (_, owner) in share0.owners.items():
            owned[owner] = owned.get(owner, 0) + sizes[int(index.fqn[1:])]
        loads = [owned.get(r, 0) for r in share0.group]
        assert max(loads) - min(loads) <= max(sizes)


def test_a_missing_owner_times_out_with_a_typed_error(tmp_path: Path) -> None:
    state = {"w": torch.arange(64, dtype=torch.float32)}
    _save(tmp_path / "c", state)
    store: Store = LocalStore(tmp_path / "c")
    readers = [
        dcp_impl.FileSystemReader(store, share_reads="shm", share_timeout=0.2) for _ in range(2)
    ]
    # One item, two ranks: rank 0 owns it (ties go to the lower rank) and never comes.
    (future,) = _futures(readers, tmp_path / "c", [_blank(state) for _ in range(2)], keep=1)
    with pytest.raises(SharedReadTimeoutError, match=r"from rank 0: expected it published"):
        future.wait()


class _Unresolvable(DefaultLoadPlanner):
    """A planner whose destinations cannot be resolved: its rank fails before it reads."""

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        raise RuntimeError("no destination for " + read_item.dest_index.fqn)


def test_a_rank_failing_before_it_reads_fails_its_peers_at_once(tmp_path: Path) -> None:
    state = _state(4)
    _save(tmp_path / "c", state)
    readers = [
        dcp_impl.FileSystemReader(tmp_path / "c", share_reads="shm", share_timeout=120)
        for _ in range(2)
    ]
    planners = [_Unresolvable(), DefaultLoadPlanner()]  # rank 0 owns about half the items
    outs = [_blank(state) for _ in range(2)]
    outcomes = _outcomes(_futures(readers, tmp_path / "c", outs, planners=planners))
    assert isinstance(outcomes[0], RuntimeError)
    assert "no destination" in str(outcomes[0])
    # Its peer learns it from the segment, not from the timeout.
    assert isinstance(outcomes[1], SharedReadError)
    assert not isinstance(outcomes[1], SharedReadTimeoutError)
    assert "rank 0 failed: RuntimeError: no destination" in str(outcomes[1])


def _planted_segment(name: str, pid: int, age_s: float) -> Path:
    folder = Path(transfer.SHM_ROOT) / name
    folder.mkdir()
    (folder / "pid-0").write_text(str(pid))
    (folder / "item-0").write_bytes(b"x" * 64)
    then = time.time() - age_s
    for path in (folder / "pid-0", folder / "item-0", folder):
        os.utime(path, (then, then))
    return folder


def _exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_segment_left_by_a_rank_that_never_joined_is_removed_by_the_next_load(
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:8]
    timeout = 60.0
    planted = {
        "left": _planted_segment(f"dcp_impl-{tag}left-h0", _exited_pid(), 2 * timeout),
        "young": _planted_segment(f"dcp_impl-{tag}young-h0", _exited_pid(), timeout / 2),
        "in use": _planted_segment(f"dcp_impl-{tag}alive-h0", os.getpid(), 2 * timeout),
    }
    try:
        state = _state(5)
        _save(tmp_path / "c", state)
        readers = [
            dcp_impl.FileSystemReader(tmp_path / "c", share_reads="shm", share_timeout=timeout)
            for _ in range(2)
        ]
        outs = [_blank(state) for _ in range(2)]
        _load(readers, tmp_path / "c", outs)
        assert all(torch.equal(out[k], v) for out in outs for k, v in state.items())
        # every joined rank exited and nothing changed for longer than a rank waits: gone;
        # a segment changed lately, or with a live member, may still be in use: kept
        assert {name for name, folder in planted.items() if folder.exists()} == {"young", "in use"}
    finally:
        for folder in planted.values():
            shutil.rmtree(folder, ignore_errors=True)
