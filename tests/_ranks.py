"""Real multi-process runs: ``world`` gloo ranks on CPU, spawned by torch.multiprocessing."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import spawn

__all__ = ["run_ranks"]


def run_ranks(worker: Callable[..., None], world: int, init_file: str, *args: Any) -> None:
    """Run ``worker(rank, world, *args)`` in ``world`` processes of one gloo group (rendezvous
    through ``init_file``, which must not exist yet); an exception in any rank fails the call
    with that rank's traceback. ``worker`` must be a module-level function (it is pickled)."""
    spawn(_rank, args=(worker, world, init_file, args), nprocs=world, join=True)


def _rank(
    rank: int, worker: Callable[..., None], world: int, init_file: str, args: tuple[Any, ...]
) -> None:
    torch.set_num_threads(1)  # 2-4 processes share a small machine
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        worker(rank, world, *args)
    finally:
        dist.destroy_process_group()
    # A rank that passed leaves without interpreter finalization, where gloo's C++ threads can
    # still drop tensors and abort the process ("terminate called without an active
    # exception", pytorch/pytorch#179291: 2 CI runs of ~10 lost a passing rank to it). A rank
    # that raised never gets here: spawn reports its traceback.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
