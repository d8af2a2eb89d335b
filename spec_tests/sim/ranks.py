"""Real processes for multi-process checks: each one reports its verdict before it ends.

:func:`run_ranks` runs ``worker(rank, world, *args)`` in ``world`` spawned processes that
form one gloo process group (the suite's ``multiprocess`` properties and the project's own
tests use it). A rank's verdict is what it *reports*, not how its process ends:

- after its worker returns, a rank writes "passed" to a file of its own (atomically), waits
  for its peers, tears the group down and leaves with ``os._exit(0)``, skipping interpreter
  finalization. gloo's C++ threads can still abort a process that passed ("terminate called
  without an active exception", pytorch/pytorch#179291); an abort after the report is
  logged as a warning, never a failure;
- a rank whose worker raises (any BaseException: torch's ``CheckpointException`` is one)
  reports the formatted traceback, and fails with it;
- a rank that ends without reporting fails with its exit status or signal and the tail of
  its output; a rank still running at the timeout (or a grace period after a peer failed)
  is killed and fails.

:func:`spawn_ranks` does the same without judging, for callers that expect a child to die
(the killed-save property SIGKILLs its own child).
"""

from __future__ import annotations

import importlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "DEFAULT_TIMEOUT",
    "RankOutcome",
    "RanksFailed",
    "run_ranks",
    "spawn_ranks",
    "check_ranks",
]

DEFAULT_TIMEOUT = 600.0
"""Seconds a run of ranks may take before the ranks still running are killed."""

# Once a rank has failed, its peers fail fast (their sockets to it close) or wait in a
# collective that can never complete; they get this many seconds before being killed.
_GRACE = 10.0
_TAIL = 4000  # characters of a rank's output quoted in a verdict
_NO_OUTPUT = "(none; what a rank prints before its worker is imported goes to the parent's stderr)"

# The documented logger name (docs/conformance.md), kept where users filter on it.
_log = logging.getLogger("spec_tests.ranks")


class RanksFailed(AssertionError):
    """At least one rank did not report success; the message tells each failed rank's story."""

    def __init__(self, message: str, outcomes: tuple[RankOutcome, ...] = ()) -> None:
        super().__init__(message)
        self.outcomes = outcomes


@dataclass(frozen=True, slots=True)
class RankOutcome:
    """How one rank ended: what it reported, if anything, and how its process exited."""

    rank: int
    reported: bool  # whether the rank reported a result before its process ended
    error: str | None  # the traceback it reported; None if it passed or reported nothing
    exitcode: int  # the process's exit status; -N for signal N
    output: str  # the tail of its stdout and stderr
    killed: str = ""  # why the runner killed it, if it did

    def __post_init__(self) -> None:
        if self.error is not None and not self.reported:
            raise ValueError(f"rank {self.rank}: an error is only known from a report, got none")

    @property
    def passed(self) -> bool:
        """Whether the rank reported success (however its process ended afterwards)."""
        return self.reported and self.error is None

    def describe(self) -> str:
        """What happened to this rank, in a paragraph for a verdict or a log."""
        ended = _how_it_ended(self.exitcode) + (f" ({self.killed})" if self.killed else "")
        if self.passed:
            return f"rank {self.rank} reported success; its process then ended with {ended}"
        if self.reported:
            return f"rank {self.rank} raised:\n{self.error}"
        return (
            f"rank {self.rank} ended with {ended} before reporting a result; "
            f"its last output:\n{self.output or _NO_OUTPUT}"
        )


def run_ranks(
    worker: Callable[..., object], world: int, *args: Any, timeout: float = DEFAULT_TIMEOUT
) -> tuple[RankOutcome, ...]:
    """Run ``worker(rank, world, *args)`` in ``world`` ranks of one gloo group; judge them.

    ``worker`` must be a module-level function (each rank imports it by name) and ``args``
    picklable. Returns every rank's outcome when all reported success; raises
    :class:`RanksFailed` naming each rank that did not.
    """
    outcomes = spawn_ranks(worker, world, *args, timeout=timeout)
    check_ranks(outcomes)
    return outcomes


def spawn_ranks(
    worker: Callable[..., object],
    world: int,
    *args: Any,
    timeout: float = DEFAULT_TIMEOUT,
    group: str | None = "gloo",
) -> tuple[RankOutcome, ...]:
    """Run the ranks as :func:`run_ranks` does and return their outcomes without judging.

    ``group`` is the process group's backend, or None for independent processes.
    """
    name = _reference(worker)
    if world < 1 or timeout <= 0:
        raise ValueError(f"world and timeout: expected positive values, got {world}, {timeout}")
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="dcp-ranks-") as folder:
        job = _Job(name, world, args, group, timeout, folder)
        processes = [context.Process(target=_rank_main, args=(job, r)) for r in range(world)]
        try:
            for process in processes:
                process.start()
            killed = _supervise(processes, Path(folder), timeout)
        finally:
            _kill([p for p in processes if p.pid is not None and p.exitcode is None])
        return tuple(
            _outcome(Path(folder), rank, p, killed.get(rank, ""))
            for rank, p in enumerate(processes)
        )


def check_ranks(outcomes: Sequence[RankOutcome]) -> None:
    """Raise :class:`RanksFailed` unless every rank reported success; log teardown aborts."""
    for outcome in outcomes:
        if outcome.passed and outcome.exitcode != 0:
            # pytorch/pytorch#179291: gloo's threads abort passing processes at teardown.
            _log.warning(
                "%s (not a failure); its last output:\n%s", outcome.describe(), outcome.output
            )
    failed = [o for o in outcomes if not o.passed]
    if failed:
        head = f"{len(failed)} of {len(outcomes)} ranks failed (expected each to report success)"
        text = "\n\n".join([head, *(o.describe() for o in failed)])
        raise RanksFailed(text, tuple(outcomes))


# --------------------------------------------------------------------------- the parent


@dataclass(frozen=True, slots=True)
class _Job:
    """What every rank is given: the worker by name, and how to run it."""

    worker: tuple[str, str]  # module, qualified name
    world: int
    args: tuple[Any, ...]
    group: str | None
    timeout: float
    folder: str  # the run's private directory: reports, output, rendezvous


def _reference(worker: Callable[..., object]) -> tuple[str, str]:
    module, name = getattr(worker, "__module__", None), getattr(worker, "__qualname__", "")
    if not module or not name or "<" in name:
        raise ValueError(f"worker: expected a module-level function, got {worker!r}")
    return module, name


def _supervise(processes: Sequence[BaseProcess], folder: Path, timeout: float) -> dict[int, str]:
    """Wait for every rank; kill those still running at the deadline and say why."""
    deadline, why = time.monotonic() + timeout, f"killed after the {timeout:g} s timeout"
    cut_short = False
    while live := {r: p for r, p in enumerate(processes) if p.exitcode is None}:
        if not cut_short and (failure := _failed_rank(processes, folder)) is not None:
            cut_short, grace = True, time.monotonic() + _GRACE
            if grace < deadline:
                deadline, why = (
                    grace,
                    f"killed: still running {_GRACE:g} s after rank {failure} failed",
                )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _kill(list(live.values()))
            return dict.fromkeys(live, why)
        wait([p.sentinel for p in live.values()], timeout=remaining)
    return {}


def _failed_rank(processes: Sequence[BaseProcess], folder: Path) -> int | None:
    """The first rank whose process has ended without reporting success."""
    for rank, process in enumerate(processes):
        if process.exitcode is not None:
            report = _read_report(folder, rank)
            if report is None or report["error"] is not None:
                return rank
    return None


def _kill(processes: Sequence[BaseProcess]) -> None:
    for process in processes:
        process.kill()
    for process in processes:
        process.join()


def _outcome(folder: Path, rank: int, process: BaseProcess, killed: str) -> RankOutcome:
    report = _read_report(folder, rank)
    log = folder / f"rank{rank}.log"
    output = log.read_text(errors="replace")[-_TAIL:] if log.exists() else ""
    exitcode = process.exitcode
    assert exitcode is not None  # every process was joined or killed and joined
    return RankOutcome(
        rank=rank,
        reported=report is not None,
        error=None if report is None else report["error"],
        exitcode=exitcode,
        output=output,
        killed=killed,
    )


def _read_report(folder: Path, rank: int) -> dict[str, str | None] | None:
    path = folder / f"rank{rank}.json"
    if not path.exists():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not isinstance(raw.get("error", ""), str | None):
        raise ValueError(f"{path}: expected a rank report, got {raw!r}")
    return {"error": raw["error"]}


def _how_it_ended(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"


# --------------------------------------------------------------------------- a rank


def _rank_main(job: _Job, rank: int) -> None:
    """A spawned rank: run the worker, report, leave without interpreter finalization."""
    folder = Path(job.folder)
    _redirect_output(folder / f"rank{rank}.log")
    try:
        worker = _start(job, rank)
        worker(rank, job.world, *job.args)
    except BaseException:  # CheckpointException is one; every kind is this rank's failure
        _report(folder, rank, traceback.format_exc())
        _leave(1)
    _report(folder, rank, None)
    _leave(0 if _teardown(job.group) else 1)


def _redirect_output(path: Path) -> None:
    """Send this process's stdout and stderr (C++ included) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _start(job: _Job, rank: int) -> Callable[..., object]:
    """Import the worker and join the group (both inside the rank, so failures are reported)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # several ranks share the machine
    target: Any = importlib.import_module(job.worker[0])
    for part in job.worker[1].split("."):
        target = getattr(target, part)
    if job.group is not None:
        rendezvous = f"file://{Path(job.folder) / 'rendezvous'}"
        timeout = timedelta(seconds=job.timeout)
        dist.init_process_group(
            job.group, init_method=rendezvous, rank=rank, world_size=job.world, timeout=timeout
        )
    return target


def _report(folder: Path, rank: int, error: str | None) -> None:
    """Write this rank's result where the parent finds it, whole or not at all."""
    temp = folder / f"rank{rank}.json.tmp"
    temp.write_text(json.dumps({"rank": rank, "error": error}), encoding="utf-8")
    os.replace(temp, folder / f"rank{rank}.json")


def _teardown(group: str | None) -> bool:
    """Wait for the peers, then leave the group; whether that went cleanly."""
    if group is None:
        return True
    import torch.distributed as dist

    try:
        # Nobody leaves while a peer may still need its sockets for the last collective.
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        traceback.print_exc()  # in the output a warning quotes; the rank has passed already
        return False
    return True


def _leave(status: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
