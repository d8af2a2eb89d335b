"""HuggingFaceWriter / HuggingFaceReader: round trips, planning-time refusals, torch's bugs fixed.

Multi-rank saves are simulated with spec_tests.sim.harness, which calls the backend in DCP's order.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
from _hf import Backend, sample
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from dcp_impl import FileSystemReader, dtypes, metadata
from dcp_impl.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidMetadataError,
    InvalidOptionError,
    LayoutMismatchError,
    UnsupportedError,
    WriteFailedError,
)
from dcp_impl.huggingface import (
    HuggingFaceReader,
    HuggingFaceWriter,
    is_huggingface_folder,
)
from dcp_impl.huggingface import files as hf_files
from dcp_impl.layout import Box
from dcp_impl.store import LocalStore
from spec_tests.sim import harness
from spec_tests.sim.ranks import run_ranks
from spec_tests.sim.shardings import col_shards, row_shards

SAFETENSORS_DTYPES = [row.torch_dtype for row in dtypes.DTYPES if row.safetensors]
OTHER_DTYPES = [row.torch_dtype for row in dtypes.DTYPES if not row.safetensors]


def save(path: Path, state: dict[str, Any], **kwargs: Any) -> None:
    dcp_save(
        state, storage_writer=HuggingFaceWriter(path, sync_files=False, **kwargs), no_dist=True
    )


def load_whole(path: Path, like: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: torch.full_like(v, 0) if isinstance(v, torch.Tensor) else v for k, v in like.items()
    }
    dcp_load(out, storage_reader=HuggingFaceReader(path, **kwargs), no_dist=True)
    return out


def bits(t: torch.Tensor) -> torch.Tensor:
    return harness.as_bytes(t)


# --------------------------------------------------------------------------- header codec


def test_header_is_space_padded_to_8_bytes_and_parses_back(tmp_path: Path) -> None:
    info = dtypes.by_torch(torch.float16)
    blob, entries = hf_files.encode_header([("a", info, (3,)), ("é b", info, ())], {"k": "v"})
    assert len(blob) % 8 == 0  # the data section starts 8-byte aligned
    path = tmp_path / "x.safetensors"
    path.write_bytes(blob + bytes(entries[-1].end))
    header = hf_files.read_header(LocalStore(tmp_path), path.name)
    assert header.data_start == len(blob)
    assert [(e.name, e.shape, e.begin, e.end) for e in header.entries.values()] == [
        ("a", (3,), 0, 6),
        ("é b", (), 6, 8),
    ]
    assert header.metadata == {"k": "v"}


def _raw(doc: object, data: int = 0, text: str | None = None) -> bytes:
    body = (text if text is not None else json.dumps(doc)).encode()
    return len(body).to_bytes(8, "little") + body + bytes(data)


BAD_HEADERS = {
    "short_prefix": b"\x01\x00",
    "huge_length": (2**63).to_bytes(8, "little") + b"{}",
    "length_past_end": (100).to_bytes(8, "little") + b"{}",
    "not_json": _raw(None, text="{nope"),
    "not_object": _raw([1, 2]),
    "duplicate_key": _raw(
        None,
        4,
        '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
        '"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}',
    ),
    "nan": _raw(None, text='{"a": NaN}'),
    "unknown_dtype": _raw({"a": {"dtype": "F12", "shape": [1], "data_offsets": [0, 1]}}, 1),
    "bool_shape": _raw({"a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, 1),
    "negative_shape": _raw({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}),
    "extra_key": _raw({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "x": 1}}, 1),
    "length_mismatch": _raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, 4),
    "gap": _raw({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}, 2),
    "overlap": _raw(
        {
            "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
            "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
        },
        3,
    ),
    "reversed_offsets": _raw({"a": {"dtype": "U8", "shape": [0], "data_offsets": [2, 1]}}, 2),
    "truncated_data": _raw({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}}, 7),
    "trailing_data": _raw({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, 2),
    "metadata_not_strings": _raw({"__metadata__": {"k": 1}}),
    "bad_utf8": (3).to_bytes(8, "little") + b"{\xff}",
}


@pytest.mark.parametrize("name", sorted(BAD_HEADERS))
def test_strict_header_parsing_names_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(BAD_HEADERS[name])
    with pytest.raises(CorruptCheckpointError, match=name):
        hf_files.read_header(LocalStore(tmp_path), path.name)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=80))
def test_header_fuzz_only_raises_corrupt(blob: bytes) -> None:
    with contextlib.suppress(CorruptCheckpointError):
        hf_files.parse_header(blob, 8 + len(blob), "fuzz.safetensors")


_ENTRY_VALUES = st.one_of(
    st.sampled_from(["U8", "F32", "BF16", "F8_E8M0", ""]),
    st.integers(-2, 10),
    st.booleans(),
    st.lists(st.integers(-1, 6), max_size=3),
    st.lists(st.booleans(), max_size=2),
)
_ENTRIES = st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets", "x"]), _ENTRY_VALUES)


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "__metadata__"]), st.one_of(_ENTRIES, _ENTRY_VALUES)
    ),
    st.integers(0, 40),
)
def test_structured_header_fuzz_only_raises_corrupt(doc: dict[str, Any], data: int) -> None:
    blob = json.dumps(doc).encode()
    try:
        header = hf_files.parse_header(blob, 8 + len(blob) + data, "fuzz.safetensors")
    except CorruptCheckpointError:
        return
    assert sum(e.length for e in header.entries.values()) == data


def test_a_header_is_parsed_with_the_collector_paused() -> None:
    """A header of many entries is an object per field and no cycle: a full collection during
    the parse would walk the caller's whole heap to free nothing (as the metadata codec)."""
    doc = {
        f"t{k}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * k, 4 * k + 4]}
        for k in range(50_000)
    }
    blob = json.dumps(doc).encode()
    collections: list[int] = []
    gc.collect()  # from empty generations: the one collection the paused parse leaves is young

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        header = hf_files.parse_header(blob, 8 + len(blob) + 200_000, "many.safetensors")
    finally:
        gc.callbacks.remove(count)
    assert len(header.entries) == 50_000
    assert collections == []
    assert gc.isenabled()


def test_index_naming_files_outside_the_folder_is_corrupt(tmp_path: Path) -> None:
    doc = {"metadata": {}, "weight_map": {"w": "../outside.safetensors"}}
    (tmp_path / hf_files.INDEX_NAME).write_text(json.dumps(doc))
    with pytest.raises(CorruptCheckpointError, match="weight_map"):
        HuggingFaceReader(tmp_path).read_metadata()


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", SAFETENSORS_DTYPES, ids=str)
def test_every_safetensors_dtype_round_trips_bit_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    state = {
        "w": sample(dtype, (3, 5)),
        "scalar": sample(dtype, ()),
        "empty": sample(dtype, (0, 4)),
    }
    save(tmp_path, state)
    out = load_whole(tmp_path, state)
    for key, value in state.items():
        harness.assert_bit_equal(out[key], value, what=key)


@pytest.mark.parametrize("dtype", OTHER_DTYPES, ids=str)
def test_unsafe_dtype_refused_at_planning_before_any_write(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    writer = HuggingFaceWriter(tmp_path, sync_files=False)
    with pytest.raises(CheckpointException) as info:
        dcp_save(
            {"ok": torch.ones(2), "bad": sample(dtype, (2,))}, storage_writer=writer, no_dist=True
        )
    assert "UnsupportedError" in str(info.value)
    assert "'bad'" in str(info.value)
    assert os.listdir(tmp_path) == []
    plan = harness.SpecSavePlanner()
    plan.set_up_planner({"bad": sample(dtype, (2,))})
    with pytest.raises(UnsupportedError, match="has no safetensors equivalent"):
        writer.prepare_local_plan(plan.create_local_plan())


def test_noncontiguous_tensors_saved_as_their_logical_values(tmp_path: Path) -> None:
    base = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    state = {
        "transposed": base[0, 0].t(),
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "strided": base[:, ::2, 1:, ::3],
        "expanded": torch.arange(3.0).expand(4, 3),
        "empty_strided": torch.empty(0, dtype=torch.float16)[::2],
    }
    assert not any(
        v.is_contiguous() for k, v in state.items() if k not in ("channels_last", "empty_strided")
    )
    save(tmp_path, state)
    on_disk = load_file(tmp_path / "model.safetensors")
    for key, value in state.items():
        assert torch.equal(on_disk[key], value), key
        assert torch.equal(load_whole(tmp_path, state)[key], value), key


def test_non_tensor_entries_round_trip_through_the_sidecar(tmp_path: Path) -> None:
    state = {
        "w": torch.ones(3),
        "step": 7,
        "cfg": {"lr": 0.5, "name": "x"},
        "raw": io.BytesIO(b"\0ab"),
    }
    save(tmp_path, state)
    out: dict[str, Any] = {
        "w": torch.zeros(3),
        "step": 0,
        "cfg": {"lr": 0.0, "name": ""},
        "raw": io.BytesIO(),
    }
    dcp_load(out, storage_reader=HuggingFaceReader(tmp_path), no_dist=True)
    assert out["step"] == 7
    assert out["cfg"] == {"lr": 0.5, "name": "x"}
    assert out["raw"].getvalue() == b"\0ab"
    assert set(load_file(tmp_path / "model.safetensors")) == {"w"}


def test_full_metadata_round_trips_through_the_sidecar(tmp_path: Path) -> None:
    state = {"a": {"b": torch.ones(2, 3)}, "n": 3, "c": torch.zeros((), dtype=torch.int8)}
    written = dcp_save(
        state, storage_writer=HuggingFaceWriter(tmp_path, sync_files=False), no_dist=True
    )
    sidecar = metadata.loads((tmp_path / hf_files.SIDECAR_NAME).read_bytes())
    read = HuggingFaceReader(tmp_path).read_metadata()
    for md in (sidecar, read):
        assert md.state_dict_metadata == written.state_dict_metadata
        assert md.planner_data == written.planner_data
    assert isinstance(read.storage_data, dict)
    assert all(
        isinstance(v, metadata.ItemLocation) and v.checksum for v in read.storage_data.values()
    )


def test_index_lists_every_tensor_and_its_file(tmp_path: Path) -> None:
    state = {"a": torch.ones(4), "b": torch.ones(2, dtype=torch.float64), "c": torch.ones(1)}
    save(tmp_path, state, fqn_to_index_mapping={"a": 1, "b": 2, "c": 2})
    index = json.loads((tmp_path / hf_files.INDEX_NAME).read_text())
    assert index["weight_map"] == {
        "a": "model-00001-of-00002.safetensors",
        "b": "model-00002-of-00002.safetensors",
        "c": "model-00002-of-00002.safetensors",
    }
    assert index["metadata"] == {"total_parameters": 4 + 2 + 1, "total_size": 16 + 16 + 4}
    assert set(load_file(tmp_path / "model-00002-of-00002.safetensors")) == {"b", "c"}


def test_tensor_missing_from_mapping_is_refused_at_planning(tmp_path: Path) -> None:
    with pytest.raises(CheckpointException, match="fqn_to_index_mapping"):
        save(tmp_path, {"a": torch.ones(1), "b": torch.ones(1)}, fqn_to_index_mapping={"a": 1})
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- several ranks


def test_several_chunks_of_one_tensor_on_one_rank_never_lose_data(tmp_path: Path) -> None:
    value = sample(torch.float32, (6, 4), seed=1)
    boxes = [Box((0, 0), (2, 4)), Box((4, 0), (2, 4)), Box((2, 0), (2, 4))]
    backend = Backend(save_distributed=True)
    harness.save(backend, str(tmp_path), [{"w": harness.shard(value, [boxes])[0]}])
    names = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(names) == 3  # one entry per name and file: each extra chunk gets its own shard file
    (got,) = harness.load(
        backend,
        str(tmp_path),
        [{"w": harness.TensorRequest(torch.float32, (6, 4), (Box.full((6, 4)),))}],
    )
    harness.assert_bit_equal(got["w"][0], value, what="w")


def test_ranks_without_save_distributed_never_clobber_each_other(tmp_path: Path) -> None:
    states = [
        {"a": torch.full((3,), 1.0)},
        {"b": torch.full((2,), 2.0)},
        {"c": torch.full((1,), 3.0)},
    ]
    backend = Backend()
    harness.save(backend, str(tmp_path), states)
    index = json.loads((tmp_path / hf_files.INDEX_NAME).read_text())["weight_map"]
    assert len(set(index.values())) == 3
    for fqn, name in index.items():
        assert list(load_file(tmp_path / name)) == [fqn]
    requests = {
        k: harness.TensorRequest(torch.float32, tuple(v[k].shape), (Box.full(v[k].shape),))
        for v in states
        for k in v
    }
    (got,) = harness.load(backend, str(tmp_path), [requests])
    assert [got[k][0].tolist() for k in "abc"] == [[1.0] * 3, [2.0] * 2, [3.0]]


def test_chunked_tensor_without_save_distributed_refused_at_global_planning(tmp_path: Path) -> None:
    value = torch.arange(8.0)
    boxes = row_shards((8,), 2)
    with pytest.raises(LayoutMismatchError, match="save_distributed=True"):
        harness.save(Backend(), str(tmp_path), [{"w": s} for s in harness.shard(value, boxes)])
    assert not list(tmp_path.iterdir())


def test_chunks_that_do_not_reach_the_end_are_refused_before_the_commit(tmp_path: Path) -> None:
    value = torch.arange(12.0).reshape(4, 3)
    part = harness.Shards((4, 3), ((Box((0, 0), (2, 3)), value[:2]),))
    with pytest.raises(InvalidMetadataError, match=r"expected its 1 chunks to cover it"):
        harness.save(Backend(save_distributed=True), str(tmp_path), [{"w": part}])
    with pytest.raises(CheckpointNotFoundError):
        HuggingFaceReader(tmp_path).read_metadata()


def test_resharded_load_four_rows_to_two_columns(tmp_path: Path) -> None:
    value = sample(torch.bfloat16, (8, 6), seed=3)
    backend = Backend(save_distributed=True)
    harness.save(
        backend, str(tmp_path), [{"w": s} for s in harness.shard(value, row_shards((8, 6), 4))]
    )
    requests = [
        {"w": harness.TensorRequest(torch.bfloat16, (8, 6), tuple(b))}
        for b in col_shards((8, 6), 2)
    ]
    results = harness.load(backend, str(tmp_path), requests)
    for rank, boxes in enumerate(col_shards((8, 6), 2)):
        harness.assert_bit_equal(results[rank]["w"][0], harness.region(value, boxes[0]), what="w")


def test_reads_fetch_only_the_requested_byte_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = sample(torch.float32, (64, 256), seed=4)
    save(tmp_path, {"w": value})
    read = []
    real = os.preadv

    def counting(fd: int, buffers: Any, offset: int) -> int:
        n = real(fd, buffers, offset)
        read.append(n)
        return n

    monkeypatch.setattr(os, "preadv", counting)
    request = harness.TensorRequest(torch.float32, (64, 256), (Box((16, 0), (8, 256)),))
    reader = HuggingFaceReader(tmp_path, verify="whole")  # partial reads are not widened
    (got,) = harness.load(Backend(), str(tmp_path), [{"w": request}], readers=[reader])
    harness.assert_bit_equal(got["w"][0], value[16:24], what="w rows 16..23")
    assert sum(read) == 8 * 256 * 4


# --------------------------------------------------------------------------- failures, stale files


def test_worker_thread_errors_reach_the_caller_with_their_traceback(tmp_path: Path) -> None:
    states = [{f"t{i}": torch.ones(2) for i in range(6)}]
    writer = HuggingFaceWriter(
        tmp_path,
        fqn_to_index_mapping={f"t{i}": i + 1 for i in range(6)},
        thread_count=3,
        sync_files=False,
    )
    with pytest.raises(WriteFailedError, match="nothing was committed") as info:
        harness.save(
            Backend(),
            str(tmp_path),
            states,
            writers=[writer],
            fail_on=lambda item: item.index.fqn == "t4",
        )
    fault = info.value.__cause__
    assert isinstance(fault, harness.InjectedFault)
    frames = [frame.name for frame in traceback.extract_tb(fault.__traceback__)]
    assert "resolve_data" in frames
    assert "_write_tensors" in frames
    assert not (tmp_path / hf_files.SIDECAR_NAME).exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_failed_save_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    save(tmp_path, {"w": torch.ones(4)})
    with pytest.raises(WriteFailedError, match="nothing was committed"):
        harness.save(Backend(), str(tmp_path), [{"w": torch.zeros(4)}], fail_on=lambda item: True)
    assert torch.equal(load_whole(tmp_path, {"w": torch.empty(4)})["w"], torch.ones(4))


def test_resave_never_reads_stale_files(tmp_path: Path) -> None:
    save(tmp_path, {"a": torch.ones(2), "b": torch.ones(2)}, fqn_to_index_mapping={"a": 1, "b": 2})
    (tmp_path / "notes.txt").write_text("kept")
    save(tmp_path, {"a": torch.full((2,), 5.0)})
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]
    assert (tmp_path / "notes.txt").read_text() == "kept"
    md = HuggingFaceReader(tmp_path).read_metadata()
    assert set(md.state_dict_metadata) == {"a"}
    assert load_whole(tmp_path, {"a": torch.empty(2)})["a"].tolist() == [5.0, 5.0]


def test_foreign_resave_makes_the_sidecar_stale_and_the_index_wins(tmp_path: Path) -> None:
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter

    save(tmp_path, {"a": torch.ones(2), "b": torch.ones(2)}, fqn_to_index_mapping={"a": 1, "b": 2})
    writer = HuggingFaceStorageWriter(str(tmp_path))
    dcp_save({"a": torch.full((2,), 9.0)}, storage_writer=writer, no_dist=True)
    md = HuggingFaceReader(tmp_path).read_metadata()
    assert set(md.state_dict_metadata) == {"a"}
    assert load_whole(tmp_path, {"a": torch.empty(2)})["a"].tolist() == [9.0, 9.0]


def test_interrupted_commit_is_never_loaded_as_a_mix(tmp_path: Path) -> None:
    save(tmp_path, {"a": torch.ones(2), "b": torch.ones(2)}, fqn_to_index_mapping={"a": 1, "b": 2})
    old = (tmp_path / "model-00002-of-00002.safetensors").read_bytes()
    save(
        tmp_path, {"a": torch.zeros(2), "b": torch.zeros(2)}, fqn_to_index_mapping={"a": 1, "b": 2}
    )
    # A crash between the renames and the sidecar: one file of the old save, no sidecar, no index.
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(old)
    (tmp_path / hf_files.SIDECAR_NAME).unlink()
    (tmp_path / hf_files.INDEX_NAME).unlink()
    with pytest.raises(CorruptCheckpointError, match="different saves"):
        HuggingFaceReader(tmp_path).read_metadata()


def test_corrupted_data_is_reported_not_loaded(tmp_path: Path) -> None:
    save(tmp_path, {"w": torch.arange(16.0)})
    path = tmp_path / "model.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointException, match="fails its checksum"):
        load_whole(tmp_path, {"w": torch.empty(16)})


def test_partial_reads_check_the_whole_item_unless_verify_is_whole(tmp_path: Path) -> None:
    value = torch.arange(64.0).reshape(8, 8)
    save(tmp_path, {"w": value})
    path = tmp_path / "model.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF  # the last row, which the partial load below does not ask for
    path.write_bytes(bytes(blob))
    request = {"w": harness.TensorRequest(torch.float32, (8, 8), (Box((0, 0), (2, 8)),))}
    for reader in (HuggingFaceReader(tmp_path), HuggingFaceReader(tmp_path, verify=True)):
        with pytest.raises(CorruptCheckpointError, match="fails its checksum"):
            harness.load(Backend(), str(tmp_path), [request], readers=[reader])
    ranges_only = HuggingFaceReader(tmp_path, verify="whole")
    (got,) = harness.load(Backend(), str(tmp_path), [request], readers=[ranges_only])
    assert torch.equal(got["w"][0], value[:2])


def test_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError):
        HuggingFaceReader(tmp_path / "nope").read_metadata()
    with pytest.raises(CheckpointNotFoundError):
        HuggingFaceReader(tmp_path).read_metadata()


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.text(), st.binary(), st.builds(object)))
def test_validate_checkpoint_id_is_total(value: object) -> None:
    for cls in (HuggingFaceWriter, HuggingFaceReader):
        assert isinstance(cls.validate_checkpoint_id(value), bool)  # type: ignore[arg-type]
    assert HuggingFaceWriter.validate_checkpoint_id("/tmp/x")
    assert HuggingFaceReader.validate_checkpoint_id("s3://bucket/x")
    assert not HuggingFaceReader.validate_checkpoint_id("nosuchprotocol://bucket/x")


def test_unreadable_sidecar_is_an_error_never_skipped(tmp_path: Path) -> None:
    save(tmp_path, {"w": torch.ones(4)})
    path = tmp_path / hf_files.SIDECAR_NAME
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(InvalidMetadataError):
        HuggingFaceReader(tmp_path).read_metadata()


def test_folder_kind_is_recognised(tmp_path: Path) -> None:
    assert not is_huggingface_folder(tmp_path)
    assert not is_huggingface_folder(tmp_path / "missing")
    save_file({"x": torch.ones(1)}, str(tmp_path / "model.safetensors"))
    assert is_huggingface_folder(tmp_path)


# --------------------------------------------------------------------------- real processes


def _gloo_worker(rank: int, world: int, root: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    full = torch.arange(10 * 6, dtype=torch.float32).reshape(10, 6)
    saved = {"w": distribute_tensor(full, mesh, [Shard(0)]), "step": 7}
    dcp_save(saved, storage_writer=HuggingFaceWriter(f"{root}/dist", save_distributed=True))
    out = {"w": distribute_tensor(torch.zeros_like(full), mesh, [Shard(1)]), "step": 0}
    dcp_load(out, storage_reader=HuggingFaceReader(f"{root}/dist"))
    assert isinstance(out["w"], DTensor)
    assert torch.equal(out["w"].full_tensor(), full), f"rank {rank}: w differs"
    assert out["step"] == 7
    # Whole tensors on every rank: DCP spreads them over the ranks, which share file 1.
    whole = {f"t{i}": torch.full((i + 1,), float(i)) for i in range(6)}
    dcp_save(whole, storage_writer=HuggingFaceWriter(f"{root}/whole"))
    back = {k: torch.zeros_like(v) for k, v in whole.items()}
    dcp_load(back, storage_reader=HuggingFaceReader(f"{root}/whole"))
    assert all(torch.equal(back[k], whole[k]) for k in whole), f"rank {rank}: whole differs"


def test_gloo_two_processes_save_and_reshard_load(tmp_path: Path) -> None:
    run_ranks(_gloo_worker, 2, str(tmp_path))
    files = json.loads((tmp_path / "whole" / hf_files.INDEX_NAME).read_text())["weight_map"]
    assert len(set(files.values())) == 2  # each rank wrote its share to a file of its own
    found = {k for name in set(files.values()) for k in load_file(tmp_path / "whole" / name)}
    assert found == {f"t{i}" for i in range(6)}
    assert len(list((tmp_path / "dist").glob("shard-*.safetensors"))) == 2


def test_destination_of_another_dtype_is_converted_only_when_asked(tmp_path: Path) -> None:
    value = torch.randn(5, 3).to(torch.bfloat16)
    save(tmp_path, {"w": value})
    like = {"w": torch.empty(5, 3, dtype=torch.float32)}
    with pytest.raises(CheckpointException, match="a load never converts"):
        load_whole(tmp_path, like)
    out = load_whole(tmp_path, like, convert_dtypes=True)  # as torch's reader always does
    assert torch.equal(out["w"], value.float())


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_convert_dtypes_takes_a_bool(tmp_path: Path, value: object) -> None:
    with pytest.raises(InvalidOptionError, match="convert_dtypes expected True or False"):
        HuggingFaceReader(tmp_path, convert_dtypes=value)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="convert_dtypes expected True or False"):
        FileSystemReader(tmp_path, convert_dtypes=value)  # type: ignore[arg-type]


def test_cached_save_plans_replay_an_earlier_save_id(tmp_path: Path) -> None:
    # DefaultSavePlanner(enable_plan_caching=True) hands an unchanged save the previous
    # save's final plans, whose Assignment carries that save's id: the files are written
    # under it, and the commit must take them (not drop them as another save's).
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner

    planner = type("HFCachingPlanner", (DefaultSavePlanner,), {})
    for step in range(3):
        state = {"w": torch.full((4, 3), float(step)), "b": torch.arange(3) + step}
        path = tmp_path / f"step{step}"
        writer = HuggingFaceWriter(str(path), save_distributed=True)
        with pytest.warns(UserWarning, match="single process"):
            dcp_save(state, storage_writer=writer, planner=planner(enable_plan_caching=True))
        loaded = {"w": torch.zeros(4, 3), "b": torch.zeros(3, dtype=torch.int64)}
        dcp_load(loaded, storage_reader=HuggingFaceReader(str(path)), no_dist=True)
        assert torch.equal(loaded["w"], state["w"])
        assert torch.equal(loaded["b"], state["b"])
