"""Compatibility in every direction: safetensors, HF folders, torch 2.13's HF backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _hf import Backend, sample
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint._consolidate_hf_safetensors import consolidate_safetensors_files
from torch.distributed.checkpoint.hf_storage import (
    HuggingFaceStorageReader,
    HuggingFaceStorageWriter,
)
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.checkpoint.storage import StorageReader

from dcp_impl import dtypes
from dcp_impl.huggingface import HuggingFaceReader, HuggingFaceWriter, consolidate
from dcp_impl.huggingface import files as hf_files
from dcp_impl.layout import Box
from spec_tests.sim import harness
from spec_tests.sim.shardings import col_shards, row_shards

SAFETENSORS_DTYPES = [row.torch_dtype for row in dtypes.DTYPES if row.safetensors]


class TorchHF:
    """torch's HF writer (distributed) and reader, for the harness."""

    name = "torch-hf"
    capabilities: frozenset[str] | None = None

    def make_writer(self, path: str) -> HuggingFaceStorageWriter:
        return HuggingFaceStorageWriter(path, save_distributed=True)

    def make_reader(self, path: str) -> HuggingFaceStorageReader:
        return HuggingFaceStorageReader(path)


def state(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {
        "w": sample(dtype, (4, 3), seed=1),
        "s": sample(dtype, (), seed=2),
        "e": sample(dtype, (0, 2)),
    }


def whole(value: torch.Tensor) -> harness.TensorRequest:
    return harness.TensorRequest(value.dtype, tuple(value.shape), (Box.full(value.shape),))


def load_with(reader: StorageReader, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {k: torch.zeros_like(v) for k, v in like.items()}
    dcp_load(out, storage_reader=reader, no_dist=True)
    return out


# ------------------------------------------------------------ our files, their readers


@pytest.mark.parametrize("dtype", SAFETENSORS_DTYPES, ids=str)
def test_safetensors_reads_every_file_we_write(tmp_path: Path, dtype: torch.dtype) -> None:
    values = state(dtype)
    dcp_save(values, storage_writer=HuggingFaceWriter(tmp_path, sync_files=False), no_dist=True)
    path = tmp_path / "model.safetensors"
    loaded = load_file(path)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == "pt"
        for key, value in values.items():
            harness.assert_bit_equal(loaded[key], value, what=key)
            harness.assert_bit_equal(f.get_tensor(key), value, what=key)


def test_safetensors_reads_our_shard_files_with_torch_sharding_info(tmp_path: Path) -> None:
    value = sample(torch.float16, (6, 4), seed=3)
    harness.save(
        Backend(save_distributed=True),
        str(tmp_path),
        [{"w": s} for s in harness.shard(value, row_shards((6, 4), 2))],
    )
    for rank in (1, 2):
        path = tmp_path / f"shard-0000{rank}-model-00001-of-00001.safetensors"
        with safe_open(str(path), framework="pt") as f:
            info = json.loads(f.metadata()["DCP_SHARDING_INFO"])
            offset = info["w"]["saved_offsets"][0]
            harness.assert_bit_equal(f.get_tensor("w"), value[offset : offset + 3], what=path.name)


@pytest.mark.parametrize("dtype", SAFETENSORS_DTYPES, ids=str)
def test_torch_reader_loads_our_folder(tmp_path: Path, dtype: torch.dtype) -> None:
    values = state(dtype)
    dcp_save(values, storage_writer=HuggingFaceWriter(tmp_path, sync_files=False), no_dist=True)
    out = load_with(HuggingFaceStorageReader(str(tmp_path)), values)
    for key, value in values.items():
        harness.assert_bit_equal(out[key], value, what=key)


def test_torch_reader_loads_our_distributed_save(tmp_path: Path) -> None:
    value = sample(torch.bfloat16, (8, 4), seed=4)
    harness.save(
        Backend(save_distributed=True),
        str(tmp_path),
        [{"w": s} for s in harness.shard(value, row_shards((8, 4), 4))],
    )
    (got,) = harness.load(TorchHF(), str(tmp_path), [{"w": whole(value)}])
    harness.assert_bit_equal(got["w"][0], value, what="w")


def test_torch_consolidation_reads_our_shards(tmp_path: Path) -> None:
    value = sample(torch.float32, (5, 6), seed=5)
    harness.save(
        Backend(save_distributed=True),
        str(tmp_path / "in"),
        [{"w": s} for s in harness.shard(value, col_shards((5, 6), 2))],
    )
    (tmp_path / "out").mkdir()
    consolidate_safetensors_files(str(tmp_path / "in"), str(tmp_path / "out"), {"w": 1})
    harness.assert_bit_equal(  # torch's name, not ours
        load_file(tmp_path / "out" / "model-00001-of-00001.safetensors")["w"], value, what="w"
    )


# ------------------------------------------------------------ their files, our reader


def test_we_load_torch_writer_folder_with_mapping(tmp_path: Path) -> None:
    values = {"a": sample(torch.float32, (3, 2), seed=6), "b": sample(torch.int64, (4,), seed=7)}
    writer = HuggingFaceStorageWriter(str(tmp_path), fqn_to_index_mapping={"a": 1, "b": 2})
    dcp_save(values, storage_writer=writer, no_dist=True)
    out = load_with(HuggingFaceReader(tmp_path), values)
    for key, value in values.items():
        harness.assert_bit_equal(out[key], value, what=key)


def test_we_load_and_consolidate_torch_distributed_saves(tmp_path: Path) -> None:
    value = sample(torch.float32, (8, 3), seed=8)
    harness.save(
        TorchHF(),
        str(tmp_path / "in"),
        [{"w": s} for s in harness.shard(value, row_shards((8, 3), 4))],
    )
    requests = [
        {"w": harness.TensorRequest(torch.float32, (8, 3), tuple(b))} for b in col_shards((8, 3), 2)
    ]
    for rank, got in enumerate(harness.load(Backend(), str(tmp_path / "in"), requests)):
        box = col_shards((8, 3), 2)[rank][0]
        harness.assert_bit_equal(got["w"][0], harness.region(value, box), what=f"rank {rank}")
    consolidate(tmp_path / "in", tmp_path / "out")
    harness.assert_bit_equal(
        load_file(tmp_path / "out" / "model.safetensors")["w"], value, what="w"
    )


def test_we_load_torch_consolidated_output(tmp_path: Path) -> None:
    value = sample(torch.float32, (4, 4), seed=9)
    writer = HuggingFaceStorageWriter(
        str(tmp_path), save_distributed=True, enable_consolidation=True
    )
    dcp_save({"w": value}, storage_writer=writer, no_dist=True)
    out = load_with(HuggingFaceReader(tmp_path), {"w": value})
    harness.assert_bit_equal(out["w"], value, what="w")


@pytest.mark.parametrize("with_index", [False, True])
def test_we_load_plain_hf_folders(tmp_path: Path, with_index: bool) -> None:
    values = {f"layer.{i}.weight": sample(torch.bfloat16, (2, i + 1), seed=i) for i in range(4)}
    if with_index:
        names = {k: f"model-0000{i % 2 + 1}-of-00002.safetensors" for i, k in enumerate(values)}
        for name in set(names.values()):
            save_file({k: v for k, v in values.items() if names[k] == name}, str(tmp_path / name))
        doc = {"metadata": {"total_size": 0}, "weight_map": names}
        (tmp_path / hf_files.INDEX_NAME).write_text(json.dumps(doc))
        # A stale file the index does not name is never read.
        save_file(
            {"layer.0.weight": torch.zeros(2, 1, dtype=torch.bfloat16)},
            str(tmp_path / "old.safetensors"),
        )
    else:
        save_file(values, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    out = load_with(HuggingFaceReader(tmp_path), values)
    for key, value in values.items():
        harness.assert_bit_equal(out[key], value, what=key)
