"""HuggingFace backend against transformers itself: tiny models built from configs (random
weights, no downloads), fp32 and bf16, tied and untied embeddings, one MoE.

Run by ``nox -s interop``, which installs transformers (constraints/interop.txt); skipped
where transformers is not installed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from dcp_impl.errors import OverwriteRefusedError
from dcp_impl.huggingface import HuggingFaceReader, HuggingFaceWriter
from spec_tests.sim import harness
from spec_tests.sim.shardings import row_shards

transformers = pytest.importorskip("transformers")

SMALL = {
    "vocab_size": 64,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 32,
}
CONFIGS: dict[str, Callable[[], Any]] = {
    "llama-untied": lambda: transformers.LlamaConfig(**SMALL, tie_word_embeddings=False),
    "qwen2-tied": lambda: transformers.Qwen2Config(**SMALL, tie_word_embeddings=True),
    # GPT-2 ties its embeddings by default; its default token ids exceed this vocabulary.
    "gpt2-tied": lambda: transformers.GPT2Config(
        vocab_size=64,
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    ),
    "mixtral-moe": lambda: transformers.MixtralConfig(
        **SMALL, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False
    ),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CASES = [(model, dtype) for model in CONFIGS for dtype in DTYPES]
TOKENS = torch.arange(12).reshape(2, 6) % 64


@pytest.fixture(autouse=True)
def _quiet_transformers() -> None:
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


@functools.cache
def _model(name: str, dtype: str, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    config = CONFIGS[name]()
    return transformers.AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype]).eval()


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS).logits


def _from_pretrained(path: Path, dtype: str) -> Any:
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    return model.eval()


def _state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def _assert_same_logits(path: Path, name: str, dtype: str, model: Any) -> None:
    loaded = _from_pretrained(path, dtype)
    for key, value in _state(loaded).items():
        assert value.dtype == DTYPES[dtype], key
    harness.assert_bit_equal(_logits(loaded), _logits(model), what=f"{name} {dtype} logits")


def _stored_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Empty destinations of every tensor the folder's safetensors files hold."""
    out = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            with safe_open(str(path / name), framework="pt") as file:
                for key in file.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    out[key] = torch.full_like(file.get_tensor(key), 0)
    return out


@pytest.mark.parametrize(("name", "dtype"), CASES)
@pytest.mark.parametrize("sharded", [False, True], ids=["one_file", "sharded"])
def test_save_pretrained_loads_bit_exact(
    tmp_path: Path, name: str, dtype: str, sharded: bool
) -> None:
    model = _model(name, dtype)
    model.save_pretrained(tmp_path, max_shard_size=4096 if sharded else "5GB")
    assert (tmp_path / "model.safetensors.index.json").exists() == sharded
    targets = _stored_tensors(tmp_path)
    dcp_load(targets, storage_reader=HuggingFaceReader(tmp_path), no_dist=True)
    on_disk: dict[str, torch.Tensor] = {}
    for file in tmp_path.glob("*.safetensors"):
        on_disk.update(load_file(file))
    assert targets.keys() == on_disk.keys()
    state = _state(model)
    for key, value in targets.items():
        harness.assert_bit_equal(value, on_disk[key], what=key)
        if key in state:  # the MoE's experts are stored in transformers' original format
            harness.assert_bit_equal(value, state[key], what=key)


@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_whole_tensor_save_loads_in_from_pretrained(tmp_path: Path, name: str, dtype: str) -> None:
    model = _model(name, dtype)
    dcp_save(_state(model), storage_writer=HuggingFaceWriter(tmp_path), no_dist=True)
    model.config.save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors.index.json").exists()
    _assert_same_logits(tmp_path, name, dtype, model)


class _Distributed:
    """spec_tests' backend protocol: two simulated ranks, consolidated after the save."""

    name = "dcp_impl-hf-consolidate"
    capabilities: frozenset[str] | None = None

    def make_writer(self, path: str) -> HuggingFaceWriter:
        return HuggingFaceWriter(path, save_distributed=True, enable_consolidation=True)

    def make_reader(self, path: str) -> HuggingFaceReader:
        return HuggingFaceReader(path)


def _rank_states(state: dict[str, torch.Tensor], ranks: int) -> list[dict[str, Any]]:
    """Every tensor split by rows over ``ranks`` (0-dim tensors whole on rank 0)."""
    out: list[dict[str, Any]] = [{} for _ in range(ranks)]
    for key, value in state.items():
        if value.dim():
            held = harness.shard(value, row_shards(tuple(value.shape), ranks))
        else:
            held = [value, *[None] * (ranks - 1)]
        for rank, part in enumerate(held):
            if part is not None:
                out[rank][key] = part
    return out


@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_distributed_save_consolidated_loads_in_from_pretrained(
    tmp_path: Path, name: str, dtype: str
) -> None:
    model = _model(name, dtype)
    harness.save(_Distributed(), str(tmp_path), _rank_states(_state(model), 2))
    assert list((tmp_path / "sharded").glob("shard-*.safetensors"))
    model.config.save_pretrained(tmp_path)
    _assert_same_logits(tmp_path, name, dtype, model)


def test_save_into_a_save_pretrained_folder_replaces_its_weights(tmp_path: Path) -> None:
    old, new = _model("llama-untied", "fp32", seed=1), _model("llama-untied", "fp32", seed=2)
    old.save_pretrained(tmp_path)
    refused = HuggingFaceWriter(tmp_path, overwrite=False)
    with pytest.raises(CheckpointException) as info:
        dcp_save(_state(new), storage_writer=refused, no_dist=True)
    (failure,) = info.value.failures.values()
    error = failure if isinstance(failure, BaseException) else failure[0]
    assert isinstance(error, OverwriteRefusedError)
    assert "Checkpoint already exists" in str(error)
    mapping = {key: 1 + i % 2 for i, key in enumerate(_state(new))}  # two files and an index
    dcp_save(_state(new), storage_writer=HuggingFaceWriter(tmp_path, mapping), no_dist=True)
    assert not (tmp_path / "model.safetensors").exists()
    _assert_same_logits(tmp_path, "llama-untied", "fp32", new)


def test_save_pretrained_into_our_folder_is_what_both_load(tmp_path: Path) -> None:
    ours, theirs = _model("qwen2-tied", "bf16", seed=1), _model("qwen2-tied", "bf16", seed=2)
    mapping = {key: 1 + i % 2 for i, key in enumerate(_state(ours))}
    dcp_save(_state(ours), storage_writer=HuggingFaceWriter(tmp_path, mapping), no_dist=True)
    theirs.save_pretrained(tmp_path)  # model.safetensors beside our sidecar and index
    _assert_same_logits(tmp_path, "qwen2-tied", "bf16", theirs)
    targets = _stored_tensors(tmp_path)
    targets = {k: v for k, v in targets.items() if k in _state(theirs)}
    dcp_load(targets, storage_reader=HuggingFaceReader(tmp_path), no_dist=True)
    for key, value in targets.items():
        harness.assert_bit_equal(value, _state(theirs)[key], what=key)
