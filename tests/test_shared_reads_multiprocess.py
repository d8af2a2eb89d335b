"""Shared reads in real multi-process loads (gloo on CPU): what every rank reads from storage,
counted across processes, equals the unique bytes the load needs."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from dcp_impl import transfer
from dcp_impl.filesystem import FileSystemReader, FileSystemWriter
from dcp_impl.store import LocalStore
from dcp_impl.testing import CountingStore, abandoned_segments
from spec_tests.sim.ranks import run_ranks

pytestmark = [
    pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is unavailable"),
    pytest.mark.skipif(not os.path.isdir(transfer.SHM_ROOT), reason="no /dev/shm"),
]


def _full() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {
        "w": torch.randn(48, 20, generator=g),
        "v": torch.randn(11, generator=g).to(torch.bfloat16),
        "step": torch.tensor(9),
    }


STORED = sum(v.numel() * v.element_size() for v in _full().values())


def _replicated(rank: int, world: int, path: str, logs: str) -> None:
    dcp_save(_full(), storage_writer=FileSystemWriter(path))
    for share in ("shm", None):
        store = CountingStore(LocalStore(path), Path(logs) / f"{share}.log")
        out = {k: torch.zeros_like(v) for k, v in _full().items()}
        dcp_load(out, storage_reader=FileSystemReader(store, share_reads=share))  # type: ignore[arg-type]
        for name, value in _full().items():
            assert torch.equal(out[name], value), f"rank {rank}: {name} differs ({share})"


def _resharded(rank: int, world: int, path: str, logs: str) -> None:
    mesh = init_device_mesh("cpu", (world,))
    full = _full()
    saved = {k: distribute_tensor(v, mesh, [Shard(0)]) for k, v in full.items() if v.dim()}
    dcp_save(saved, storage_writer=FileSystemWriter(path))
    for share in ("shm", None):
        store = CountingStore(LocalStore(path), Path(logs) / f"{share}.log")
        out = {
            k: distribute_tensor(torch.zeros_like(v), mesh, [Shard(v.dim() - 1)])
            for k, v in full.items()
            if v.dim()
        }
        dcp_load(out, storage_reader=FileSystemReader(store, share_reads=share))  # type: ignore[arg-type]
        for name, loaded in out.items():
            assert isinstance(loaded, DTensor)
            assert torch.equal(loaded.full_tensor(), full[name]), f"rank {rank}: {name} ({share})"


def _read(logs: Path, name: str) -> int:
    return sum(r.length for r in CountingStore.records(logs / name))


def _left_behind(since: float) -> set[str]:
    """Segments left behind (every rank that joined exited) and changed since ``since``: another
    xdist worker's loads, running meanwhile, have segments too (with live members), and its
    tests plant old abandoned ones for the next load to remove."""
    root = Path(transfer.SHM_ROOT)
    found = set()
    for name in abandoned_segments(str(root)):
        with contextlib.suppress(OSError):  # removed meanwhile
            if (root / name).stat().st_mtime >= since:
                found.add(name)
    return found


@pytest.mark.parametrize("world", [2, 4])
def test_replicated_state_is_read_once_per_host(tmp_path: Path, world: int) -> None:
    start = time.time()
    run_ranks(_replicated, world, str(tmp_path / "ckpt"), str(tmp_path))
    assert _read(tmp_path, "shm.log") == STORED  # every rank loaded all of it
    assert _read(tmp_path, "None.log") == world * STORED
    assert _left_behind(start) == set()


def test_resharded_load_reads_each_chunk_once(tmp_path: Path) -> None:
    # Saved as 2 row shards, loaded as 2 column shards: each rank needs part of both chunks
    # of "w" (a verified partial read reads its whole chunk); "v" (1-D) keeps its layout.
    start = time.time()
    run_ranks(_resharded, 2, str(tmp_path / "ckpt"), str(tmp_path))
    w, v = (_full()[k].numel() * _full()[k].element_size() for k in ("w", "v"))
    assert _read(tmp_path, "shm.log") == w + v  # the 0-dim "step" is not saved here
    assert _read(tmp_path, "None.log") == 2 * w + v
    assert _left_behind(start) == set()
