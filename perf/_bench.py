"""Running one benchmark: pedantic rounds with fresh targets, device sync, labels for the report."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from perf.report import KINDS
from perf.workloads import Piece
from spec_tests.harness import assert_bit_equal, region

__all__ = ["Case", "OPS", "measure", "check_loaded"]

#: What a benchmark times; the report groups rows by (op, workload).
OPS = (
    *("save", "save-fsync", "load", "read_metadata", "plan_load", "first_read"),
    *("gpu-load", "copy", "mp-save", "mp-load", "plan_save", "plan_save-alone"),
)

Setup = Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Case:
    """The labels a benchmark stores in ``extra_info``, which perf/report.py reads back."""

    op: str
    workload: str
    subject: str  # a backend name, or the baseline's / limit's name
    kind: str
    nbytes: int  # bytes moved per round; 0 where throughput means nothing (metadata)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.op not in OPS or self.kind not in KINDS or self.nbytes < 0:
            raise ValueError(
                f"benchmark case: expected op in {OPS}, kind in {KINDS}, nbytes >= 0; got {self}"
            )


def measure(
    benchmark: Any,
    case: Case,
    target: Callable[..., Any],
    setup: Setup,
    *,
    rounds: int,
    teardown: Callable[..., None] | None = None,
) -> Any:
    """Time ``target`` over ``rounds`` rounds, each on fresh arguments from ``setup``.

    Returns the last round's result (the only one with ``--benchmark-disable``),
    so that the caller can check it is correct.
    """
    benchmark.extra_info.update(dataclasses.asdict(case))
    benchmark.group = f"{case.op} {case.workload} ({case.device})"  # pytest-benchmark's tables
    timed = target
    if case.device.startswith("cuda"):

        def timed(*args: Any, **kwargs: Any) -> Any:
            # Kernels and copies are asynchronous: the round ends when the device is done.
            result = target(*args, **kwargs)
            torch.cuda.synchronize()
            return result

    # One untimed round first: lazy imports, thread pools and allocator growth are paid once
    # per process, not once per night, and would otherwise land in whichever round is first.
    result = benchmark.pedantic(
        timed, setup=setup, teardown=teardown, rounds=rounds, iterations=1, warmup_rounds=1
    )
    if benchmark.stats is not None and case.nbytes:  # None when timing is disabled
        benchmark.extra_info["gbps"] = case.nbytes / benchmark.stats.stats.median / 1e9
    return result


def check_loaded(source: dict[str, torch.Tensor], ranks: Sequence[Sequence[Piece]]) -> None:
    """Fail unless every loaded piece equals its region of the source tensors, bit for bit."""
    for rank, pieces in enumerate(ranks):
        for piece in pieces:
            expected = region(source[piece.fqn], piece.box)
            assert_bit_equal(
                piece.tensor.cpu(), expected, what=f"rank {rank} {piece.fqn} {piece.box}"
            )
