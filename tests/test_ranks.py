"""spec_tests.sim.ranks: a rank's verdict is what it reports, not how its process ends."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from spec_tests.sim.ranks import RankOutcome, RanksFailed, check_ranks, run_ranks, spawn_ranks

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is unavailable")


# Workers run in spawned ranks, which import them from this module by name.


def _sum_ranks(rank: int, world: int) -> None:
    total = torch.tensor([rank + 1])
    dist.all_reduce(total)
    assert total.item() == world * (world + 1) // 2


def _pass_then_abort(rank: int, world: int) -> None:
    # gloo's threads abort a passing rank while the group is torn down (pytorch/pytorch#179291).
    dist.destroy_process_group = os.abort


def _raise_on_rank_1(rank: int, world: int) -> None:
    if rank == 1:
        raise ValueError("rank 1 exploded")


def _abort_on_rank_1(rank: int, world: int) -> None:
    if rank == 1:
        print("rank 1 about to abort", file=sys.stderr, flush=True)
        os.abort()


_DISK_FULL = "no space left for the shard"


def _raise_checkpoint_exception(rank: int, world: int) -> None:
    failures = {rank: (OSError(_DISK_FULL), traceback.StackSummary())}
    raise CheckpointException("save", failures)


def _hang_on_rank_1(rank: int, world: int) -> None:
    if rank == 1:
        time.sleep(3600)


def _failure(worker: Callable[[int, int], None], world: int) -> tuple[str, RanksFailed]:
    with pytest.raises(RanksFailed) as failed:
        run_ranks(worker, world)
    return str(failed.value), failed.value


def test_ranks_that_pass_return_their_outcomes() -> None:
    outcomes = run_ranks(_sum_ranks, 2)
    assert [(o.rank, o.passed, o.exitcode) for o in outcomes] == [(0, True, 0), (1, True, 0)]


def test_abort_after_reporting_success_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="spec_tests.ranks"):
        outcomes = run_ranks(_pass_then_abort, 2)
    assert all(o.passed and o.exitcode == -signal.SIGABRT for o in outcomes)
    assert "signal SIGABRT (not a failure)" in caplog.text


def test_a_raising_rank_fails_with_its_traceback() -> None:
    text, failed = _failure(_raise_on_rank_1, 2)
    assert "rank 1 raised:\nTraceback (most recent call last):" in text
    assert "in _raise_on_rank_1" in text
    assert "ValueError: rank 1 exploded" in text
    assert not failed.outcomes[1].passed


def test_a_rank_dying_before_its_report_fails_naming_the_signal() -> None:
    text, _ = _failure(_abort_on_rank_1, 2)
    assert "rank 1 ended with signal SIGABRT before reporting a result" in text
    assert "rank 1 about to abort" in text  # the tail of its output


def test_a_base_exception_is_reported() -> None:
    # torch's CheckpointException is a BaseException, not an Exception.
    text, failed = _failure(_raise_checkpoint_exception, 1)
    assert "rank 0 raised:" in text
    assert "CheckpointException: CheckpointException ranks:dict_keys([0])" in text
    assert f"OSError: {_DISK_FULL}" in text
    assert failed.outcomes[0].reported


def test_a_hung_rank_is_killed_at_the_timeout() -> None:
    outcomes = spawn_ranks(_hang_on_rank_1, 2, timeout=10, group=None)
    assert not outcomes[1].reported
    assert outcomes[1].killed == "killed after the 10 s timeout"
    assert outcomes[1].exitcode == -signal.SIGKILL
    with pytest.raises(RanksFailed, match=r"rank 1 ended with signal SIGKILL \(killed after"):
        check_ranks(outcomes)


def test_workers_must_be_importable_by_name() -> None:
    with pytest.raises(ValueError, match="module-level function"):
        run_ranks(lambda rank, world: None, 2)


def test_an_error_needs_a_report() -> None:
    with pytest.raises(ValueError, match="only known from a report"):
        RankOutcome(rank=0, reported=False, error="boom", exitcode=1, output="")
