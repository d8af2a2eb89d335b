"""Tests of dcp_impl.filesystem through dcp.save / dcp.load (no_dist) and its call protocol."""

from __future__ import annotations

import io
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    ReadItem,
    SavePlan,
    SavePlanner,
    TensorWriteData,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from dcp_impl import dtypes
from dcp_impl.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidMetadataError,
    OverwriteRefusedError,
    UnsupportedError,
    WriteFailedError,
)
from dcp_impl.filesystem import METADATA_FILE, FileSystemReader, FileSystemWriter
from dcp_impl.layout import Box

# torch's dedup step calls WriteItem.tensor_storage_size(), which raises for bits dtypes.
_TORCH_CANNOT_PLAN = {torch.bits8, torch.bits16, torch.bits1x8, torch.bits2x4, torch.bits4x2}


class _NoDedupPlanner(DefaultSavePlanner):
    """A single-process planner that skips torch's dedup step (see _TORCH_CANNOT_PLAN)."""

    def _dedup_save_plans(self, all_plans: list[SavePlan]) -> list[SavePlan]:
        return all_plans


def _values(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = torch.Size(shape).numel() * dtype.itemsize
    high = 2 if dtype == torch.bool else 256
    return torch.randint(0, high, (n,), dtype=torch.uint8, generator=g).view(dtype).reshape(shape)


def _raw(t: torch.Tensor) -> bytes:
    flat = t.detach().clone(memory_format=torch.contiguous_format).reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def _save(sd: dict[str, Any], path: Path, **kwargs: Any) -> Metadata:
    planner = kwargs.pop("planner", None)
    return dcp_save(
        sd, storage_writer=FileSystemWriter(path, **kwargs), planner=planner, no_dist=True
    )


def _load(sd: dict[str, Any], path: Path, **kwargs: Any) -> None:
    dcp_load(sd, storage_reader=FileSystemReader(path, **kwargs), no_dist=True)


def _filled(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    out = torch.empty(shape, dtype=dtype)
    out.reshape(-1).view(torch.uint8).fill_(0xAB)  # fill_ is not implemented for every dtype
    return out


def _zeros_like(sd: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _filled(v.shape, v.dtype) if isinstance(v, torch.Tensor) else None for k, v in sd.items()
    }


def _failure(info: pytest.ExceptionInfo[CheckpointException]) -> BaseException:
    (failure,) = info.value.failures.values()
    return failure if isinstance(failure, BaseException) else failure[0]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("row", dtypes.DTYPES, ids=lambda r: r.name)
@pytest.mark.parametrize("threads", [1, 3])
def test_every_dtype_round_trips_bit_exact(
    tmp_path: Path, row: dtypes.DtypeInfo, threads: int
) -> None:
    dtype = row.torch_dtype
    base = _values((6, 5), dtype)
    sd = {
        "plain": base,
        "transposed view": base.t(),
        "strided": base[::2, 1:4],
        "scalar": _values((), dtype, seed=1),
        "empty": _values((0, 3), dtype),
        "big": _values((1 << 17,), dtype, seed=2),
    }
    planner = _NoDedupPlanner() if dtype in _TORCH_CANNOT_PLAN else None
    _save(sd, tmp_path, thread_count=threads, planner=planner)
    out = _zeros_like(sd)
    _load(out, tmp_path, thread_count=threads)
    for name, tensor in sd.items():
        assert out[name].shape == tensor.shape, name
        assert _raw(out[name]) == _raw(tensor), name


def test_names_bytes_and_objects_round_trip(tmp_path: Path) -> None:
    names = ["a.b.c", "ünï cødé", "with space", "sl/ash", "../../escape", "", ".metadata.json"]
    sd: dict[str, Any] = {n: torch.full((2,), i, dtype=torch.int32) for i, n in enumerate(names)}
    sd["blob"] = io.BytesIO(b"\x00raw bytes\xff")
    sd["obj"] = {"nested": [1, 2.5, "x"]}
    _save(sd, tmp_path)
    out: dict[str, Any] = {n: torch.zeros(2, dtype=torch.int32) for n in names}
    out["blob"] = io.BytesIO()
    out["obj"] = {"nested": None}  # dcp flattens nested dicts
    _load(out, tmp_path)
    for i, n in enumerate(names):
        assert out[n].tolist() == [i, i], n
    assert out["blob"].getvalue() == b"\x00raw bytes\xff"
    assert out["obj"] == {"nested": [1, 2.5, "x"]}
    assert not (tmp_path.parent / "escape").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("data-")) == [
        METADATA_FILE
    ]


def test_load_converts_to_destination_dtype_only_when_asked(tmp_path: Path) -> None:
    _save({"w": torch.arange(4, dtype=torch.float32)}, tmp_path)
    out = {"w": torch.zeros(4, dtype=torch.float64)}
    with pytest.raises(CheckpointException, match="a load never converts"):
        _load(out, tmp_path)
    _load(out, tmp_path, convert_dtypes=True)
    assert out["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_read_metadata_is_what_finish_was_given(tmp_path: Path) -> None:
    saved = _save({"w": torch.ones(3, 2), "n": 7}, tmp_path)
    reader = FileSystemReader(tmp_path)
    loaded = reader.read_metadata()
    assert loaded.storage_meta is not None
    assert saved.storage_meta is not None
    assert loaded.storage_meta.load_id == reader.load_id
    loaded.storage_meta.load_id = saved.storage_meta.load_id
    assert loaded == saved


# --------------------------------------------------------------------------- chunks, resharding


def _save_chunks(path: Path, name: str, tensor: torch.Tensor, boxes: list[Box]) -> None:
    """Drive the writer as dcp.save would, with several chunks of one tensor on one rank."""
    props = TensorProperties.create_from_tensor(tensor)
    chunks = [ChunkStorageMetadata(torch.Size(b.offsets), torch.Size(b.sizes)) for b in boxes]
    items = [
        WriteItem(
            MetadataIndex(name, c.offsets, i),
            WriteItemType.SHARD,
            tensor_data=TensorWriteData(c, props, tensor.shape),
        )
        for i, c in enumerate(chunks)
    ]

    class Planner:
        def resolve_data(self, item: WriteItem) -> torch.Tensor:
            assert item.tensor_data is not None
            box = Box.of(item.tensor_data.chunk)
            return tensor[tuple(slice(o, e) for o, e in zip(box.offsets, box.ends, strict=True))]

    writer = FileSystemWriter(path)
    writer.set_up_storage_writer(True, rank=0, use_collectives=True)
    (plan,) = writer.prepare_global_plan([writer.prepare_local_plan(SavePlan(items))])
    results = writer.write_data(plan, Planner()).wait()  # type: ignore[arg-type]
    writer.finish(Metadata({name: TensorStorageMetadata(props, tensor.shape, chunks)}), [results])


class _RecordingLoadPlanner:
    def __init__(self, dest: torch.Tensor) -> None:
        self.dest = dest
        self.resolved: list[ReadItem] = []
        self.committed: list[tuple[ReadItem, torch.Tensor]] = []

    def resolve_tensor(self, item: ReadItem) -> torch.Tensor:
        self.resolved.append(item)
        view = self.dest
        for d, (o, n) in enumerate(zip(item.dest_offsets, item.lengths, strict=True)):
            view = view.narrow(d, o, n)
        return view

    def commit_tensor(self, item: ReadItem, tensor: torch.Tensor) -> None:
        self.committed.append((item, tensor))


def test_several_chunks_per_rank_load_whole(tmp_path: Path) -> None:
    full = _values((6, 8), torch.float16)
    _save_chunks(
        tmp_path, "w", full, [Box((0, 0), (6, 3)), Box((0, 3), (4, 5)), Box((4, 3), (2, 5))]
    )
    out = {"w": torch.zeros(6, 8, dtype=torch.float16)}
    _load(out, tmp_path)
    assert _raw(out["w"]) == _raw(full)


@pytest.mark.parametrize("verify", [False, True])
def test_resharded_read_of_short_runs_copies_from_the_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verify: bool
) -> None:
    full = _values((16, 32), torch.bfloat16)
    _save_chunks(tmp_path, "w", full, [Box((0, 0), (16, 16)), Box((0, 16), (16, 16))])
    dest = torch.zeros(3, 4, dtype=torch.bfloat16)
    # A destination straddling both chunks: (rows 5..7, cols 14..17).
    items = [
        ReadItem(LoadItemType.TENSOR, MetadataIndex("w"), torch.Size([0, 0]),
                 MetadataIndex("w", (0, 0)), torch.Size([5, 14]), torch.Size([3, 2])),
        ReadItem(LoadItemType.TENSOR, MetadataIndex("w"), torch.Size([0, 2]),
                 MetadataIndex("w", (0, 16)), torch.Size([5, 0]), torch.Size([3, 2])),
    ]  # fmt: skip
    reader = FileSystemReader(tmp_path, verify=verify, thread_count=1)
    reader.set_up_storage_reader(reader.read_metadata(), True)
    counts: list[int] = []
    real = os.preadv

    def counting(fd: int, buffers: list[memoryview], offset: int) -> int:
        counts.append(real(fd, buffers, offset))
        return counts[-1]

    monkeypatch.setattr(os, "preadv", counting)
    planner = _RecordingLoadPlanner(dest)
    reader.read_data(reader.prepare_local_plan(_plan(items)), planner).wait()  # type: ignore[arg-type]
    assert _raw(dest) == _raw(full[5:8, 14:18])
    assert [i for i, _ in planner.committed] == items
    # Runs of 4 bytes: copied out of the mapped file (only their pages are touched), with no
    # read call. Which bytes preadv takes when a source cannot map is tested in test_io.py and
    # test_io_runs.py.
    assert counts == []


def _plan(items: list[ReadItem]) -> Any:
    from torch.distributed.checkpoint.planner import LoadPlan

    return LoadPlan(items)


# --------------------------------------------------------------------------- faults


def test_missing_checkpoint_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=METADATA_FILE):
        FileSystemReader(tmp_path / "nowhere").read_metadata()
    with pytest.raises(CheckpointException, match="expected a committed checkpoint"):
        _load({"w": torch.zeros(1)}, tmp_path)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_data_fails_the_load(tmp_path: Path, damage: str) -> None:
    _save({"w": torch.arange(1000.0)}, tmp_path)
    (data,) = [p for p in tmp_path.iterdir() if p.name.startswith("data-")]
    if damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[17] ^= 0x10
        data.write_bytes(bytes(raw))
    elif damage == "truncate":
        os.truncate(data, data.stat().st_size - 1)
    else:
        data.unlink()
    out = {"w": torch.zeros(1000)}
    with pytest.raises(CheckpointException) as info:
        _load(out, tmp_path)
    failure = _failure(info)
    assert isinstance(failure, CorruptCheckpointError)
    assert data.name in str(failure)
    assert "'w'" in str(failure)


def test_unverified_load_still_reports_truncation(tmp_path: Path) -> None:
    _save({"w": torch.arange(10.0)}, tmp_path)
    (data,) = [p for p in tmp_path.iterdir() if p.name.startswith("data-")]
    os.truncate(data, 8)
    with pytest.raises(CheckpointException, match="truncated"):
        _load({"w": torch.zeros(10)}, tmp_path, verify=False)


def test_chunks_that_do_not_reach_the_end_are_refused_before_the_commit(tmp_path: Path) -> None:
    from spec_tests.backends import builtin
    from spec_tests.sim import harness

    value = torch.arange(12.0).reshape(4, 3)
    part = harness.Shards((4, 3), ((Box((0, 0), (2, 3)), value[:2]),))
    with pytest.raises(InvalidMetadataError, match=r"found holes at offsets=\(2, 0\)"):
        harness.save(builtin("dcp_impl-fs"), str(tmp_path), [{"w": part}])
    assert not (tmp_path / METADATA_FILE).exists()


def test_failing_item_fails_the_save_with_its_traceback(tmp_path: Path) -> None:
    _save({"w": torch.zeros(4)}, tmp_path)
    before = sorted(os.listdir(tmp_path))

    def explode(item: WriteItem) -> Any:
        raise ValueError(f"cannot resolve {item.index.fqn}")

    class Failing(DefaultSavePlanner):
        def resolve_data(self, write_item: WriteItem) -> Any:
            if write_item.index.fqn == "bad":
                explode(write_item)
            return super().resolve_data(write_item)

    sd = {f"t{i}": torch.ones(100) for i in range(8)} | {"bad": torch.ones(3)}
    with pytest.raises(CheckpointException) as info:
        _save(sd, tmp_path, thread_count=3, planner=Failing())
    failure = _failure(info)
    assert isinstance(failure, WriteFailedError)
    assert isinstance(failure.__cause__, ValueError)
    frames = [f.name for f in traceback.extract_tb(failure.__cause__.__traceback__)]
    assert "explode" in frames
    assert sorted(os.listdir(tmp_path)) == before
    out = {"w": torch.ones(4)}
    _load(out, tmp_path)
    assert out["w"].tolist() == [0.0] * 4


class _Crash(BaseException):
    """A process dying: not an Exception, so no `except Exception` handler sees it."""


_SYSCALLS = ("open", "write", "fsync", "replace", "unlink", "close")


@contextmanager
def _crash_at(step: int | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make the step-th file-system call raise _Crash (None: count the calls only)."""
    calls: list[str] = []
    for name in _SYSCALLS:
        real = getattr(os, name)

        def wrapper(*args: Any, _real: Callable[..., Any] = real, _name: str = name) -> Any:
            calls.append(_name)
            if step is not None and len(calls) == step + 1:
                raise _Crash(f"crash at {_name}")
            return _real(*args)

        monkeypatch.setattr(os, name, wrapper)
    try:
        yield calls
    finally:
        monkeypatch.undo()


def _state(path: Path) -> dict[str, Any] | None:
    out: dict[str, Any] = {"w": torch.zeros(64), "v": torch.zeros(3, dtype=torch.int64)}
    try:
        reader = FileSystemReader(path)
        md = reader.read_metadata()
    except CheckpointNotFoundError:
        return None
    dcp_load(out, storage_reader=reader, no_dist=True)
    assert md is not None
    return out


@pytest.mark.parametrize("first_save", [True, False])
def test_crash_at_every_step_leaves_old_or_new_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_save: bool
) -> None:
    old = {"w": torch.arange(64.0), "v": torch.tensor([1, 2, 3])}
    new = {"w": -torch.arange(64.0), "v": torch.tensor([4, 5, 6])}
    reference = tmp_path / "reference"
    if not first_save:
        _save(old, reference)
    with _crash_at(None, monkeypatch) as calls:
        _save(new, reference, thread_count=2)
    steps = len(calls)
    assert steps > 10
    for step in range(steps):
        target = tmp_path / f"run{step}"
        if not first_save:
            _save(old, target)
        with _crash_at(step, monkeypatch), pytest.raises((_Crash, CheckpointException)):
            _save(new, target, thread_count=2)
        state = _state(target)
        if state is None:
            assert first_save, f"crash at step {step} lost the committed checkpoint"
            continue
        expected = [old, new] if not first_save else [new]
        assert any(
            torch.equal(state["w"], e["w"]) and torch.equal(state["v"], e["v"]) for e in expected
        ), f"crash at step {step} ({calls}) left a mixed checkpoint"


def test_overwrite_false_refuses_before_writing(tmp_path: Path) -> None:
    _save({"w": torch.zeros(2)}, tmp_path, overwrite=False)  # an empty directory is fine
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(CheckpointException) as info:
        _save({"w": torch.ones(2)}, tmp_path, overwrite=False)
    assert isinstance(_failure(info), OverwriteRefusedError)
    assert "Checkpoint already exists" in str(_failure(info))  # torch's words, which tools match
    assert sorted(os.listdir(tmp_path)) == before


def test_new_save_removes_superseded_files_only(tmp_path: Path) -> None:
    _save({"w": torch.zeros(2)}, tmp_path)
    old_files = {p.name for p in tmp_path.iterdir() if p.name.startswith("data-")}
    user_files = ["notes.txt", "data-mine.bin", ".metadata"]
    for name in user_files:
        (tmp_path / name).write_text("keep me")
    _save({"w": torch.ones(2)}, tmp_path, thread_count=2)
    names = set(os.listdir(tmp_path))
    assert not (old_files & names)
    assert set(user_files) <= names


# --------------------------------------------------------------------------- contract


def test_reset_retargets_and_renews_ids(tmp_path: Path) -> None:
    writer = FileSystemWriter(tmp_path / "a")
    first = writer.storage_meta()
    writer.reset(tmp_path / "b")
    second = writer.storage_meta()
    assert first is not None
    assert second is not None
    assert first.save_id != second.save_id
    assert second.checkpoint_id == str(tmp_path / "b")
    dcp_save({"w": torch.ones(2)}, storage_writer=writer, no_dist=True)
    dcp_save({"w": torch.full((2,), 2.0)}, storage_writer=writer, checkpoint_id=tmp_path / "c")
    assert not (tmp_path / "a").exists()
    reader = FileSystemReader(tmp_path / "b")
    out = {"w": torch.zeros(2)}
    dcp_load(out, storage_reader=reader, no_dist=True)
    load_id = reader.load_id
    reader.reset(tmp_path / "c")
    assert reader.load_id != load_id
    dcp_load(out, storage_reader=reader, no_dist=True)
    assert out["w"].tolist() == [2.0, 2.0]


@settings(max_examples=50, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.text(),
        st.binary(),
        st.integers(),
        st.floats(),
        st.builds(object),
        st.builds(Path, st.text()),
        st.lists(st.text()),
        st.text().map(lambda s: f"s3://{s}"),
    )
)
def test_validate_checkpoint_id_is_total(value: object) -> None:
    for cls in (FileSystemWriter, FileSystemReader):
        assert isinstance(cls.validate_checkpoint_id(value), bool)  # type: ignore[arg-type]


def test_validate_checkpoint_id_answers() -> None:
    class Hostile(os.PathLike[str]):
        def __fspath__(self) -> str:
            raise RuntimeError("no")

    cases: dict[object, bool] = {
        "/tmp/ckpt": True, "relative/dir": True, Path("/x"): True, "s3://bucket/x": True,
        "memory://x": True, "simplecache::s3://b/x": True, "nosuchproto://x": False,
        "s3://": False, "": False, None: False, 3: False, b"/tmp": False, "a\0b": False,
        Hostile(): False,
    }  # fmt: skip
    for value, expected in cases.items():
        assert FileSystemWriter.validate_checkpoint_id(value) is expected, value  # type: ignore[arg-type]


def test_every_method_accepts_extra_keywords(tmp_path: Path) -> None:
    # DCP's calls may grow keywords; the constructors are the user's and refuse unknown ones
    # (tests/test_torch_options.py).
    extra: dict[str, Any] = {"from_a_newer_torch": 1}
    writer = FileSystemWriter(tmp_path)
    writer.reset(tmp_path, **extra)
    writer.set_up_storage_writer(True, **extra)
    plan = writer.prepare_local_plan(SavePlan([]), **extra)
    (plan,) = writer.prepare_global_plan([plan], **extra)
    results = writer.write_data(plan, SavePlanner.__new__(DefaultSavePlanner), **extra).wait()
    writer.finish(Metadata({}), [results], **extra)
    assert FileSystemWriter.validate_checkpoint_id(str(tmp_path), **extra)
    reader = FileSystemReader(tmp_path)
    reader.reset(tmp_path, **extra)
    md = reader.read_metadata(**extra)
    reader.set_up_storage_reader(md, True, **extra)
    (load_plan,) = reader.prepare_global_plan(
        [reader.prepare_local_plan(_plan([]), **extra)], **extra
    )
    reader.read_data(load_plan, None, **extra).wait()  # type: ignore[arg-type]
    assert FileSystemReader.validate_checkpoint_id(str(tmp_path), **extra)


def test_one_writer_saves_twice_with_cached_plans(tmp_path: Path) -> None:
    writer = FileSystemWriter(tmp_path)
    planner = DefaultSavePlanner(enable_plan_caching=True)
    for value in (1.0, 2.0, 3.0):  # the later saves replay the cached global plan
        dcp_save({"w": torch.full((3,), value)}, storage_writer=writer, planner=planner)
        out = {"w": torch.zeros(3)}
        _load(out, tmp_path)
        assert out["w"].tolist() == [value] * 3
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("data-")]) == 1


def test_per_rank_metadata_mode_needs_the_rank(tmp_path: Path) -> None:
    # Collective-free saves are supported (tests/test_collective_free.py); without the
    # saving rank the metadata file cannot be named.
    with pytest.raises(UnsupportedError, match="use_collectives=False needs the saving rank"):
        FileSystemWriter(tmp_path).set_up_storage_writer(True, use_collectives=False)
    assert not tmp_path.joinpath(METADATA_FILE).exists()
