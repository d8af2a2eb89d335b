"""Real multi-process runs (gloo on CPU): DTensors saved in one sharding, loaded in another."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard, distribute_tensor

from dcp_impl.__main__ import main as cli
from dcp_impl.errors import OverwriteRefusedError
from dcp_impl.filesystem import FileSystemReader, FileSystemWriter
from spec_tests.sim.ranks import run_ranks

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is unavailable")


def _weights() -> dict[str, torch.Tensor]:
    # 10 rows over 4 ranks shard unevenly (3, 3, 3, 1).
    return {
        "w": torch.arange(10 * 6, dtype=torch.float32).reshape(10, 6),
        "b": torch.arange(7, dtype=torch.bfloat16),
    }


def _sharded(
    values: dict[str, torch.Tensor], mesh: DeviceMesh, w: list[Placement]
) -> dict[str, Any]:
    return {
        "w": distribute_tensor(values["w"], mesh, w),
        "b": distribute_tensor(values["b"], mesh, [Replicate()] * len(w)),
        "step": torch.tensor(7),
    }


def _worker(rank: int, world: int, path: str) -> None:
    shape = (world,) if world == 2 else (2, world // 2)
    mesh = init_device_mesh("cpu", shape)
    save_layout: list[Placement] = [Shard(0) for _ in shape]
    load_layout: list[Placement] = [Shard(1), *(Shard(0) for _ in shape[1:])]
    dcp_save(_sharded(_weights(), mesh, save_layout), storage_writer=FileSystemWriter(path))

    zeros = {k: torch.zeros_like(v) for k, v in _weights().items()}
    out = _sharded(zeros, mesh, load_layout)
    out["step"] = torch.tensor(0)
    dcp_load(out, storage_reader=FileSystemReader(path))
    for name, full in _weights().items():
        loaded = out[name]
        assert isinstance(loaded, DTensor)
        if name == "w":
            assert loaded.placements == tuple(load_layout)
        assert torch.equal(loaded.full_tensor(), full), f"rank {rank}: {name} differs"
    assert out["step"].item() == 7

    refused = False
    try:
        dcp_save(out, storage_writer=FileSystemWriter(path, overwrite=False))
    except CheckpointException as err:
        refused = any(
            isinstance(f if isinstance(f, BaseException) else f[0], OverwriteRefusedError)
            for f in err.failures.values()
        )
    assert refused, f"rank {rank}: overwrite=False did not refuse"


@pytest.mark.parametrize("world", [2, 4])
def test_dtensor_save_and_reshard_load(tmp_path: Path, world: int) -> None:
    path = tmp_path / "ckpt"
    run_ranks(_worker, world, str(path))
    data_files = sorted(p.name for p in path.iterdir() if p.name.startswith("data-"))
    # Rank r's files are named ...-r<r>-<k>.bin: every rank held a distinct shard of "w".
    assert {name.split("-")[2] for name in data_files} == {f"r{r}" for r in range(world)}
    assert cli(["verify", os.fspath(path)]) == 0
