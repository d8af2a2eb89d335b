"""Running one benchmark: pedantic rounds with fresh targets, device sync, labels for the report."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from perf.report import KINDS
from perf.workloads import Piece
from spec_tests.api import assert_bit_equal, frozen_heap, region

__all__ = ["Case", "OPS", "measure", "record", "check_loaded"]

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
    procs: int = 1  # processes that moved them together (the mp-* operations)

    def __post_init__(self) -> None:
        if self.op not in OPS or self.kind not in KINDS or self.nbytes < 0 or self.procs < 1:
            raise ValueError(
                f"benchmark case: expected op in {OPS}, kind in {KINDS}, nbytes >= 0, "
                f"procs >= 1; got {self}"
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
    _label(benchmark, case)
    timed = target
    if case.device.startswith("cuda"):

        def timed(*args: Any, **kwargs: Any) -> Any:
            # Kernels and copies are asynchronous: the round ends when the device is done.
            result = target(*args, **kwargs)
            torch.cuda.synchronize()
            return result

    if not benchmark.disabled:  # one untimed call in CI: no collection needed there
        setup, teardown = _frozen_heap(setup, teardown)
    # One untimed round first: lazy imports, thread pools and allocator growth are paid once
    # per process, not once per night, and would otherwise land in whichever round is first.
    result = benchmark.pedantic(
        timed, setup=setup, teardown=teardown, rounds=rounds, iterations=1, warmup_rounds=1
    )
    _throughput(benchmark, case)
    return result


def _frozen_heap(
    setup: Setup, teardown: Callable[..., None] | None
) -> tuple[Setup, Callable[..., None]]:
    """``setup`` and ``teardown`` wrapped so that each round runs inside
    :func:`spec_tests.api.frozen_heap`: it starts after a full garbage collection, with the
    heap frozen until it ends.

    A full collection walks every object of the process: torch's own and the harness's as
    well as the subject's. Where one fell inside a round it cost that round as much as the
    load being timed (perf/README.md, "What is measured"), and which rounds it fell in was
    luck. Frozen, the collections a round triggers walk only what the round made, so each
    subject still pays for the garbage it makes, and only for that.
    """
    rounds = contextlib.ExitStack()

    def frozen_setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        made = setup()
        rounds.enter_context(frozen_heap())
        return made

    def thawed_teardown(*args: Any, **kwargs: Any) -> None:
        rounds.close()
        if teardown is not None:
            teardown(*args, **kwargs)

    return frozen_setup, thawed_teardown


def record(benchmark: Any, case: Case, seconds: Sequence[float]) -> None:
    """Store ``seconds``, rounds timed elsewhere, as the benchmark's rounds, labelled as
    :func:`measure` labels its own: for times only the measured code can take (rounds of
    several processes, each timed inside the ranks between barriers)."""
    _label(benchmark, case)
    if benchmark.disabled:
        return
    if not seconds:
        raise ValueError(f"benchmark {case}: expected timed rounds, got none")
    # pytest-benchmark times only what it calls; pedantic() stores each of its rounds this
    # way (BenchmarkFixture._make_stats, then update: pytest-benchmark 4 and 5).
    stats = benchmark._make_stats(1)
    for duration in seconds:
        stats.update(duration)
    benchmark._mode = "rounds timed inside the ranks"  # used: no "fixture not used" warning
    _throughput(benchmark, case)


def _label(benchmark: Any, case: Case) -> None:
    benchmark.extra_info.update(dataclasses.asdict(case))
    benchmark.group = f"{case.op} {case.workload} ({case.device})"  # pytest-benchmark's tables


def _throughput(benchmark: Any, case: Case) -> None:
    if benchmark.stats is not None and case.nbytes:  # None when timing is disabled
        benchmark.extra_info["gbps"] = case.nbytes / benchmark.stats.stats.median / 1e9


def check_loaded(source: dict[str, torch.Tensor], ranks: Sequence[Sequence[Piece]]) -> None:
    """Fail unless every loaded piece equals its region of the source tensors, bit for bit."""
    for rank, pieces in enumerate(ranks):
        for piece in pieces:
            expected = region(source[piece.fqn], piece.box)
            assert_bit_equal(
                piece.tensor.cpu(), expected, what=f"rank {rank} {piece.fqn} {piece.box}"
            )
