"""dcp_impl's filesystem backend in collective-free saves: per-rank metadata, merged at load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

from dcp_impl.errors import CheckpointNotFoundError, InvalidMetadataError, UnsupportedError
from dcp_impl.filesystem import METADATA_FILE, FileSystemReader, FileSystemWriter
from dcp_impl.layout import Box
from spec_tests.backends import builtin
from spec_tests.sim import harness, shardings
from spec_tests.sim.ranks import run_ranks

FS = builtin("dcp_impl-fs")
VALUE = torch.arange(7 * 3, dtype=torch.float32).reshape(7, 3)


def _rows(ranks: int) -> list[dict[str, object]]:
    boxes = tuple(map(tuple, shardings.row_shards(VALUE.shape, ranks)))
    return [{} if held is None else {"t": held} for held in harness.shard(VALUE, boxes)]


def _whole(ranks: int) -> list[dict[str, harness.Request]]:
    request = harness.TensorRequest(VALUE.dtype, tuple(VALUE.shape), (Box.full(VALUE.shape),))
    return [{"t": request}] * ranks


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if "metadata" in p.name)


@pytest.mark.parametrize("collectives", [True, False])
@pytest.mark.parametrize("load_ranks", [1, 2, 5])
def test_three_ranks_saved_alone_load_on_any_ranks(
    tmp_path: Path, collectives: bool, load_ranks: int
) -> None:
    harness.save(FS, str(tmp_path), _rows(3), collectives=False)
    assert _files(tmp_path) == [".metadata-r0.json", ".metadata-r1.json", ".metadata-r2.json"]
    got = harness.load(FS, str(tmp_path), _whole(load_ranks), collectives=collectives)
    for loaded in got:
        harness.assert_bit_equal(loaded["t"][0], VALUE, what="t")


def test_a_missing_rank_file_is_a_hole_that_raises(tmp_path: Path) -> None:
    harness.save(FS, str(tmp_path), _rows(3), collectives=False)
    (tmp_path / ".metadata-r1.json").unlink()
    with pytest.raises(InvalidMetadataError, match="do not make one checkpoint"):
        FileSystemReader(str(tmp_path)).read_metadata()


def test_a_stale_rank_file_of_more_ranks_overlaps_and_raises(tmp_path: Path) -> None:
    harness.save(FS, str(tmp_path), _rows(4), collectives=False)
    harness.save(FS, str(tmp_path), _rows(2), collectives=False)
    with pytest.raises(InvalidMetadataError, match="overlap"):
        FileSystemReader(str(tmp_path)).read_metadata()


def test_saves_with_and_without_collectives_supersede_each_other(tmp_path: Path) -> None:
    harness.save(FS, str(tmp_path), _rows(2))
    harness.save(FS, str(tmp_path), _rows(2), collectives=False)
    assert _files(tmp_path) == [".metadata-r0.json", ".metadata-r1.json"]
    harness.save(FS, str(tmp_path), _rows(3))
    assert _files(tmp_path) == [METADATA_FILE]
    got = harness.load(FS, str(tmp_path), _whole(1))
    harness.assert_bit_equal(got[0]["t"][0], VALUE, what="t")


def test_an_empty_location_names_both_forms(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="collective-free"):
        FileSystemReader(str(tmp_path)).read_metadata()


def test_a_collective_free_save_needs_the_rank(tmp_path: Path) -> None:
    writer = FileSystemWriter(str(tmp_path))
    with pytest.raises(UnsupportedError, match="rank"):
        writer.set_up_storage_writer(True, use_collectives=False)


def _save_alone(rank: int, world: int, path: str) -> None:
    mesh = init_device_mesh("cpu", (world,))
    state = {
        "w": distribute_tensor(VALUE, mesh, [Shard(0)]),
        "b": distribute_tensor(VALUE[0].clone(), mesh, [Replicate()]),
    }
    dcp_save(state, storage_writer=FileSystemWriter(path), use_collectives=False)
    dist.barrier()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is unavailable")
def test_real_ranks_saved_alone_load_whole_in_one_process(tmp_path: Path) -> None:
    run_ranks(_save_alone, 3, str(tmp_path), timeout=240)
    assert METADATA_FILE not in os.listdir(tmp_path)
    state = {"w": torch.zeros_like(VALUE), "b": torch.zeros(3)}
    dcp_load(state, storage_reader=FileSystemReader(str(tmp_path)), no_dist=True)
    assert torch.equal(state["w"], VALUE)
    assert torch.equal(state["b"], VALUE[0])
