"""transformers' folder conventions (docs/huggingface.md, "transformers' names and precedence"):
one file is ``model.safetensors`` without an index, a save replaces another writer's weights,
and where both ``model.safetensors`` and an index exist, ``model.safetensors`` is read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from dcp_impl import consolidate
from dcp_impl.errors import OverwriteRefusedError
from dcp_impl.huggingface import HuggingFaceReader, HuggingFaceWriter
from dcp_impl.huggingface.files import INDEX_NAME, SIDECAR_NAME, SINGLE_FILE
from spec_tests.sim import harness
from spec_tests.sim.shardings import row_shards

NEW = {"a": torch.full((2, 3), 5.0), "b": torch.arange(4)}


def _save(path: Path, state: dict[str, Any], **kwargs: Any) -> None:
    writer = HuggingFaceWriter(path, sync_files=False, **kwargs)
    dcp_save(state, storage_writer=writer, no_dist=True)


def _load(path: Path, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {k: torch.zeros_like(v) for k, v in like.items()}
    dcp_load(out, storage_reader=HuggingFaceReader(path), no_dist=True)
    return out


def _assert_state(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def _save_pretrained_like(path: Path, state: dict[str, torch.Tensor], shards: int = 1) -> None:
    """What transformers' save_pretrained leaves: model.safetensors, or shards plus an index."""
    path.mkdir(exist_ok=True)
    if shards == 1:
        save_file(state, path / SINGLE_FILE, metadata={"format": "pt"})
        return
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in names[i::shards]}
        save_file(part, path / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    doc = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (path / INDEX_NAME).write_text(json.dumps(doc))


def test_one_file_save_is_model_safetensors_without_index(tmp_path: Path) -> None:
    _save(tmp_path, NEW)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SIDECAR_NAME, SINGLE_FILE]
    with safe_open(str(tmp_path / SINGLE_FILE), framework="pt") as file:
        assert file.metadata()["format"] == "pt"
    _assert_state(load_file(tmp_path / SINGLE_FILE), NEW)


def test_consolidated_one_file_is_model_safetensors_with_format_pt(tmp_path: Path) -> None:
    value = torch.arange(12.0).reshape(4, 3)
    harness.save(
        _Distributed(),
        str(tmp_path / "in"),
        [{"w": s} for s in harness.shard(value, row_shards((4, 3), 2))],
    )
    consolidate(tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out" / INDEX_NAME).exists()
    with safe_open(str(tmp_path / "out" / SINGLE_FILE), framework="pt") as file:
        assert file.metadata()["format"] == "pt"
        assert torch.equal(file.get_tensor("w"), value)


class _Distributed:
    name = "dcp_impl-hf"
    capabilities: frozenset[str] | None = None

    def make_writer(self, path: str) -> HuggingFaceWriter:
        return HuggingFaceWriter(path, save_distributed=True, sync_files=False)

    def make_reader(self, path: str) -> HuggingFaceReader:
        return HuggingFaceReader(path)


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("mapping", [None, {"a": 1, "b": 2}], ids=["one_file", "two_files"])
def test_save_replaces_another_writers_weights(
    tmp_path: Path, shards: int, mapping: dict[str, int] | None
) -> None:
    old = {"a": torch.zeros(2, 3), "b": torch.zeros(4, dtype=torch.int64), "c": torch.ones(1)}
    _save_pretrained_like(tmp_path, old, shards)
    (tmp_path / "config.json").write_text("{}")
    _save(tmp_path, NEW, fqn_to_index_mapping=mapping)
    names = sorted(p.name for p in tmp_path.iterdir())
    if mapping is None:
        assert names == ["config.json", SIDECAR_NAME, SINGLE_FILE]
    else:
        files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        assert names == ["config.json", SIDECAR_NAME, *files, INDEX_NAME]
    _assert_state(_load(tmp_path, NEW), NEW)


def test_overwrite_false_refuses_another_writers_weights(tmp_path: Path) -> None:
    _save_pretrained_like(tmp_path, {"a": torch.zeros(2, 3)})
    with pytest.raises(CheckpointException) as info:
        _save(tmp_path, NEW, overwrite=False)
    (failure,) = info.value.failures.values()
    error = failure if isinstance(failure, BaseException) else failure[0]
    assert isinstance(error, OverwriteRefusedError)
    assert "Checkpoint already exists" in str(error)
    assert SINGLE_FILE in str(error)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SINGLE_FILE]


def test_overwrite_false_accepts_a_folder_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    _save(tmp_path, NEW, overwrite=False)
    _assert_state(_load(tmp_path, NEW), NEW)


def test_model_safetensors_written_later_wins_over_our_sidecar(tmp_path: Path) -> None:
    _save(tmp_path, NEW, fqn_to_index_mapping={"a": 1, "b": 2})  # sidecar, two files, index
    later = {"a": torch.full((2, 3), 7.0), "b": torch.arange(4) + 1}
    _save_pretrained_like(tmp_path, later)  # save_pretrained leaves the index; reads this
    _assert_state(_load(tmp_path, later), later)


def test_model_safetensors_wins_over_an_index_without_sidecar(tmp_path: Path) -> None:
    _save_pretrained_like(tmp_path, {"a": torch.zeros(2, 3), "b": torch.zeros(4)}, shards=2)
    _save_pretrained_like(tmp_path, NEW)
    assert (tmp_path / INDEX_NAME).exists()
    _assert_state(_load(tmp_path, NEW), NEW)


def test_our_model_safetensors_stays_current_beside_a_foreign_index(tmp_path: Path) -> None:
    # transformers reads model.safetensors first, so an index beside it changes nothing.
    _save(tmp_path, {**NEW, "step": 3})
    (tmp_path / INDEX_NAME).write_text(json.dumps({"weight_map": {"a": "model-x.safetensors"}}))
    out: dict[str, Any] = {**{k: torch.zeros_like(v) for k, v in NEW.items()}, "step": 0}
    dcp_load(out, storage_reader=HuggingFaceReader(tmp_path), no_dist=True)
    assert out["step"] == 3  # from the sidecar: only it holds non-tensor entries


def test_folders_saved_before_model_safetensors_still_load(tmp_path: Path) -> None:
    # Earlier versions named one file model-00001-of-00001.safetensors and wrote an index.
    _save(tmp_path, {**NEW, "step": 3})
    old_name = "model-00001-of-00001.safetensors"
    (tmp_path / SINGLE_FILE).rename(tmp_path / old_name)
    sidecar = tmp_path / SIDECAR_NAME
    sidecar.write_text(sidecar.read_text().replace(f'"{SINGLE_FILE}"', f'"{old_name}"'))
    index = {"metadata": {"total_size": 40}, "weight_map": dict.fromkeys(NEW, old_name)}
    (tmp_path / INDEX_NAME).write_text(json.dumps(index))
    out: dict[str, Any] = {**{k: torch.zeros_like(v) for k, v in NEW.items()}, "step": 0}
    dcp_load(out, storage_reader=HuggingFaceReader(tmp_path), no_dist=True)
    assert out["step"] == 3  # the sidecar is still current
    _assert_state({k: out[k] for k in NEW}, NEW)
    _save(tmp_path, NEW)  # and a new save replaces the old names
    assert sorted(p.name for p in tmp_path.iterdir()) == [SIDECAR_NAME, SINGLE_FILE]
