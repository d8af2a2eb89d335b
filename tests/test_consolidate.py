"""consolidate(): distributed shards -> full-tensor safetensors files, index and sidecar."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from _hf import Backend, sample
from safetensors.torch import load_file

import dcp_impl.metadata
from dcp_impl import dtypes
from dcp_impl.errors import LayoutMismatchError
from dcp_impl.huggingface import HuggingFaceReader, HuggingFaceWriter, consolidate
from dcp_impl.huggingface import files as hf_files
from dcp_impl.layout import Box
from spec_tests.sim import harness
from spec_tests.sim.shardings import col_shards, grid, row_shards

SAFETENSORS_DTYPES = [row.torch_dtype for row in dtypes.DTYPES if row.safetensors]
MODEL = "model.safetensors"  # one output file: named as save_pretrained names it


def save_sharded(
    path: Path, values: dict[str, torch.Tensor], layouts: dict[str, list[list[Box]]]
) -> None:
    ranks = max(len(boxes) for boxes in layouts.values())
    states: list[dict[str, object]] = [{} for _ in range(ranks)]
    for fqn, value in values.items():
        for rank, held in enumerate(harness.shard(value, layouts[fqn])):
            if held is not None:
                states[rank][fqn] = held
    harness.save(Backend(save_distributed=True), str(path), states)


LAYOUTS = {
    "rows_uneven": ((7, 5), row_shards((7, 5), 4)),
    "cols": ((5, 7), col_shards((5, 7), 3)),
    "grid_2x2": ((6, 4), grid((6, 4), 2, 2)),
    "more_ranks_than_rows": ((2, 3), row_shards((2, 3), 4)),
    "zero_size": ((0, 4), row_shards((0, 4), 2)),
    "zero_dim": ((), [[Box.full(())]]),
    "one_d": ((9,), row_shards((9,), 2)),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_shards_become_full_tensors(tmp_path: Path, layout: str) -> None:
    shape, boxes = LAYOUTS[layout]
    value = sample(torch.float32, shape, seed=7)
    save_sharded(tmp_path / "in", {"w": value}, {"w": boxes})
    consolidate(tmp_path / "in", tmp_path / "out")
    harness.assert_bit_equal(load_file(tmp_path / "out" / MODEL)["w"], value, what=layout)
    assert not (tmp_path / "out" / hf_files.INDEX_NAME).exists()  # one file needs no index


@pytest.mark.parametrize("dtype", SAFETENSORS_DTYPES, ids=str)
def test_every_dtype_consolidates_bit_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    values = {"m": sample(dtype, (5, 3), seed=1), "s": sample(dtype, (), seed=2)}
    save_sharded(tmp_path / "in", values, {"m": col_shards((5, 3), 2), "s": [[Box.full(())]]})
    consolidate(tmp_path / "in", tmp_path / "out")
    on_disk = load_file(tmp_path / "out" / MODEL)
    for fqn, value in values.items():
        harness.assert_bit_equal(on_disk[fqn], value, what=fqn)


def test_mapping_spreads_tensors_over_files_and_sidecar_loads(tmp_path: Path) -> None:
    values = {
        "a": torch.arange(12.0).reshape(4, 3),
        "b": torch.arange(6, dtype=torch.int64),
        "n": torch.ones(2),
    }
    layouts = {"a": row_shards((4, 3), 2), "b": row_shards((6,), 2), "n": [[Box.full((2,))], []]}
    save_sharded(tmp_path / "in", values, layouts)
    consolidate(tmp_path / "in", tmp_path / "out", {"a": 1, "b": 2, "n": 2})
    assert load_file(tmp_path / "out" / "model-00002-of-00002.safetensors").keys() == {"b", "n"}
    md = HuggingFaceReader(tmp_path / "out").read_metadata()
    for fqn, value in values.items():
        entry = md.state_dict_metadata[fqn]
        assert isinstance(entry, type(md.state_dict_metadata["a"]))
        assert len(entry.chunks) == 1  # type: ignore[union-attr]
        requests = {
            fqn: harness.TensorRequest(value.dtype, tuple(value.shape), (Box.full(value.shape),))
        }
        (got,) = harness.load(Backend(), str(tmp_path / "out"), [requests])
        harness.assert_bit_equal(got[fqn][0], value, what=fqn)


def _refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, boxes: Sequence[Sequence[Box]], match: str
) -> None:
    value = torch.arange(16.0).reshape(4, 4)
    # The writer itself refuses such chunks (W9): write the folder as a writer without that
    # check would (an older dcp_impl, or another tool writing the same format).
    with monkeypatch.context() as patched:
        patched.setattr(dcp_impl.metadata, "validate", lambda metadata: None)
        save_sharded(tmp_path / "in", {"w": value}, {"w": [list(b) for b in boxes]})
    with pytest.raises(LayoutMismatchError, match=match):
        consolidate(tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was created


def test_overlapping_shards_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _refused(tmp_path, monkeypatch, [[Box((0, 0), (3, 4))], [Box((2, 0), (2, 4))]], "overlapping")


def test_holes_are_refused_never_filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _refused(tmp_path, monkeypatch, [[Box((0, 0), (2, 4))], [Box((3, 0), (1, 4))]], "holes")


def test_hole_at_the_end_is_refused_thanks_to_the_true_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refused(tmp_path, monkeypatch, [[Box((0, 0), (1, 4))], [Box((1, 0), (2, 4))]], "holes")


def test_writer_consolidate_mode_writes_shards_then_full_files(tmp_path: Path) -> None:
    value = sample(torch.bfloat16, (6, 2), seed=5)
    states = [{"w": s, "step": 3} for s in harness.shard(value, row_shards((6, 2), 3))]
    writers = [
        HuggingFaceWriter(tmp_path, save_distributed=True, consolidate=True, sync_files=False)
        for _ in states
    ]
    harness.save(Backend(), str(tmp_path), states, writers=writers)
    assert len(list((tmp_path / "sharded").glob("shard-*.safetensors"))) == 3
    harness.assert_bit_equal(load_file(tmp_path / MODEL)["w"], value, what="w")
    (got,) = harness.load(Backend(), str(tmp_path), [{"step": harness.BytesRequest()}])
    assert got["step"] == 3


def test_output_dir_must_differ_from_input(tmp_path: Path) -> None:
    save_sharded(tmp_path, {"w": torch.ones(2)}, {"w": [[Box.full((2,))]]})
    with pytest.raises(ValueError, match="must differ"):
        consolidate(tmp_path, tmp_path)
