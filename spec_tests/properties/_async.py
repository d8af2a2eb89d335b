"""Driving ``dcp.async_save`` for the asynchronous properties: stagers, futures, resources.

One place knows how an async save is started and waited for: :func:`start` returns an
:class:`AsyncSave` whose ``staged`` / ``wait`` hide the two shapes ``async_save`` returns
(an ``AsyncSaveResponse`` when the stager stages in the background, a bare future when
staging was done before the call returned).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.planner import SavePlanner
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
from torch.distributed.checkpoint.state_dict_saver import (
    AsyncCheckpointerType,
    AsyncSaveResponse,
    async_save,
)
from torch.distributed.checkpoint.storage import StorageWriter

from spec_tests.contract.verdicts import ContractViolation
from spec_tests.sim import harness

__all__ = [
    "STAGERS",
    "AsyncSave",
    "GatedPlanner",
    "Resources",
    "scribble",
    "snapshot",
    "start",
]

#: How a save is staged: ``own`` is async_save's own choice (the writer, if it is an
#: ``AsyncStager``, else torch's default); the others are torch's ``DefaultStager`` on CPU
#: with shared memory and background staging on or off (pinned memory needs CUDA).
STAGERS: dict[str, StagingOptions | None] = {
    "own": None,
    "default": StagingOptions(False, False, False, False),
    "default-shm": StagingOptions(False, True, False, False),
    "default-async": StagingOptions(False, False, True, False),
    "default-shm-async": StagingOptions(False, True, True, False),
}

_TIMEOUT_S = 300.0


class GatedPlanner(harness.SpecSavePlanner):
    """The harness's planner, whose background save starts planning only once ``gate`` is set.

    The caller changes its state dict after staging and then opens the gate, so the save
    surely runs after the change: a stager that did not copy is caught every time, not
    when a thread switch happens to fall the right way.
    """

    def __init__(self, gate: threading.Event, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate

    def set_up_planner(
        self,
        state_dict: dict[str, Any],
        storage_meta: StorageMeta | None = None,
        is_coordinator: bool = False,
    ) -> None:
        # docstring inherited (torch inspects this signature for storage_meta)
        if not self.gate.wait(_TIMEOUT_S):
            raise ContractViolation(f"the test never opened the gate within {_TIMEOUT_S:g} s")
        super().set_up_planner(state_dict, storage_meta, is_coordinator)


@dataclass(slots=True)
class AsyncSave:
    """One ``async_save`` under way: its futures, and the stager the caller owns."""

    staging: Future[None] | None  # None: staging finished before async_save returned
    upload: Future[Any]
    stager: DefaultStager | None

    def staged(self) -> None:
        """Wait until the state dict may be changed again (the staged copy is made)."""
        if self.staging is not None:
            _result(self.staging, "staging_completion")

    def wait(self) -> Any:
        """Wait for the upload (raising what the background save raised); close the stager."""
        try:
            return _result(self.upload, "upload_completion")
        finally:
            if self.stager is not None:
                self.stager.close()


def start(
    writer: StorageWriter,
    location: str,
    state: dict[str, Any],
    stager: str,
    *,
    mode: AsyncCheckpointerType = AsyncCheckpointerType.THREAD,
    planner: SavePlanner | None = None,
) -> AsyncSave:
    """Start ``dcp.async_save`` of ``state`` through ``writer`` to ``location``.

    ``planner`` defaults to the harness's (torch's default planning, without torch's
    planner bugs on some dtypes, which are no backend's).
    """
    options = STAGERS[stager]
    owned = None if options is None else DefaultStager(options)
    response = harness.call(
        "async_save",
        async_save,
        state,
        checkpoint_id=location,
        storage_writer=writer,
        planner=harness.SpecSavePlanner() if planner is None else planner,
        async_checkpointer_type=mode,
        async_stager=owned,
        no_dist=not (dist.is_available() and dist.is_initialized()),
    )
    if isinstance(response, AsyncSaveResponse):
        return AsyncSave(response.staging_completion, response.upload_completion, owned)
    return AsyncSave(None, response, owned)


def _result(future: Future[Any], what: str) -> Any:
    # harness.call turns torch's CheckpointException (a BaseException) into an Exception.
    done, _ = wait([future], timeout=_TIMEOUT_S)
    if not done:
        raise ContractViolation(f"{what} did not resolve within {_TIMEOUT_S:g} s")
    return harness.call(what, future.result)


def scribble(state: Mapping[str, Any]) -> None:
    """Change every byte of every tensor of ``state`` in place (flip its lowest bit).

    Flipping bit 0 keeps a bool a bool, and no byte keeps its value, so a checkpoint that
    holds any byte written after the call is told apart from one holding the call's values.
    """
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.numel():
            value.reshape(-1).view(torch.uint8).bitwise_xor_(1)


@dataclass(frozen=True, slots=True)
class Resources:
    """What a process holds that a leaking save would grow."""

    rss_bytes: int
    fds: int
    threads: int  # native threads (/proc/self/task): torch's pools are not Python threads
    shm: int  # entries of /dev/shm (system-wide: a bound, never an exact count)

    def grown(self, since: Resources) -> dict[str, int]:
        """How much each count grew since ``since``."""
        return {
            "rss_bytes": self.rss_bytes - since.rss_bytes,
            "fds": self.fds - since.fds,
            "threads": self.threads - since.threads,
            "shm": self.shm - since.shm,
        }


def snapshot() -> Resources | None:
    """This process's resources now, or None where /proc is not there to tell."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    with open("/proc/self/statm", encoding="ascii") as statm:
        rss_pages = int(statm.read().split()[1])
    shm = len(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else 0
    threading.enumerate()  # reaps finished Python threads' bookkeeping
    return Resources(
        rss_bytes=rss_pages * os.sysconf("SC_PAGE_SIZE"),
        fds=len(os.listdir("/proc/self/fd")),
        threads=len(os.listdir("/proc/self/task")),
        shm=shm,
    )
