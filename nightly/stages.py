"""What each stage of the nightly runs, and the record it leaves.

Every stage is a subprocess of this Python (the venv nox made), its output in
``OUT/stages/<stage>.log``; a stage fails when its command exits non-zero, and the next one
runs all the same: one broken stage must not hide what the others found.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "MUTATION_ARGS",
    "PERF_BASELINE",
    "STAGES",
    "Options",
    "Shard",
    "StageResult",
    "THIRDPARTY",
    "THIRDPARTY_XFAILS",
    "SEEDS_VARIABLE",
    "night_seeds",
    "repeat_tests",
    "verdict_seeds",
]

#: The third-party backends the nightly judges beside the built-ins (installed from their
#: packages by ``nox -s nightly``), and the expected failures of each.
THIRDPARTY = ("spec_tests.thirdparty.s3torchconnector:backend",)
THIRDPARTY_XFAILS = "spec_tests/thirdparty/s3torchconnector.toml"
#: The gate's stored baseline: measured on this project's 2-core machine (perf/baselines/).
PERF_BASELINE = Path("perf/baselines/python-2core.json")
#: The mutation sample that fits 41 minutes on 2 cores (docs/conformance.md section 16).
MUTATION_ARGS = ("--seed", "21", "--budget-s", "2460")


@dataclass(frozen=True, slots=True)
class Shard:
    """Part ``index`` of ``count`` (``--shard K/N``): the per-backend stages (matrix, repeat)
    take every ``count``-th built-in from the ``index``-th on, so ``count`` machines share one
    night's work and their folders merge into one (``--stages none`` over the union)."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard: expected K/N with 1 <= K <= N, got {self.index}/{self.count}")

    @property
    def whole(self) -> bool:
        """Whether this is the whole night (``1/1``)."""
        return self.count == 1

    @property
    def suffix(self) -> str:
        """What this shard adds to its records' and folders' names ('' for the whole night)."""
        return "" if self.whole else f"-{self.index}of{self.count}"

    def picks(self, names: Sequence[str]) -> tuple[str, ...]:
        """This shard's share of ``names``: every ``count``-th one, from the ``index``-th."""
        return tuple(names[self.index - 1 :: self.count])


@dataclass(frozen=True, slots=True)
class Options:
    """What the command line chose (see ``python -m nightly --help``)."""

    out: Path
    backends: tuple[str, ...] = ()  # the matrix's built-ins; empty: every one (of the shard)
    shard: Shard = Shard()
    jobs: int = 1
    matrix_args: tuple[str, ...] = ()
    perf_args: tuple[str, ...] = ()
    perf_baseline: Path = PERF_BASELINE
    mutation_args: tuple[str, ...] = MUTATION_ARGS


@dataclass(frozen=True, slots=True)
class StageResult:
    """One stage's outcome: ``passed`` or ``failed``, how long it took and one line on why."""

    stage: str
    status: str
    seconds: float
    detail: str = ""
    logs: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.status not in ("passed", "failed"):
            raise ValueError(f"stage {self.stage}: status {self.status!r}, expected passed/failed")


def _run(
    stage: str,
    options: Options,
    commands: Sequence[Sequence[str]],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> StageResult:
    """Run ``commands`` one after the other into the stage's log; failed if any exits non-zero.

    The record is named for the shard too (``matrix-2of3``), so shards' folders merge.
    ``env`` is added to this process's environment, and written into the log with each command.
    """
    stage += options.shard.suffix
    log = log or options.out / "stages" / f"{stage}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    codes = []
    added = dict(env or {})
    with log.open("w", encoding="utf-8") as sink:
        for command in commands:
            shown = [f"{k}={v}" for k, v in added.items()] + list(command)
            sink.write(f"$ {shlex.join(shown)}\n")
            sink.flush()
            codes.append(
                subprocess.call(
                    command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **added}
                )
            )
    seconds = time.monotonic() - start
    if not any(codes):
        return StageResult(stage, "passed", seconds, logs=(str(log),))
    why = f"exit status {', '.join(map(str, codes))}: see {log}"
    return StageResult(stage, "failed", seconds, why, (str(log),))


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _matrix_backends(options: Options) -> tuple[str, ...]:
    if options.backends or options.shard.whole:
        return options.backends  # empty: the matrix's own default, every built-in
    from spec_tests.cli.main import DEFAULT_BACKENDS

    return options.shard.picks(DEFAULT_BACKENDS)


def _nothing(stage: str, options: Options) -> StageResult:
    return StageResult(stage + options.shard.suffix, "passed", 0.0, "no built-in in this shard")


def _matrix(options: Options) -> StageResult:
    backends = _matrix_backends(options)
    if not (backends or options.shard.whole):
        return _nothing("matrix", options)
    folder = options.out / "matrix-runs" / f"builtins{options.shard.suffix}"
    command = _python("-m", "spec_tests", "matrix", "--profile=dcp-nightly")
    command += [f"--jobs={options.jobs}", f"--out={folder}"]
    command += [f"--backend={b}" for b in backends]
    return _run("matrix", options, [[*command, "--", *options.matrix_args]])


def _thirdparty(options: Options) -> StageResult:
    # The backends store in S3: they run against the project's local server (loopback only),
    # under a URL root, so the properties that plant local files skip rather than lie.
    from spec_tests.sim.s3server import local_s3

    folder = options.out / "matrix-runs" / "thirdparty"
    command = _python("-m", "spec_tests", "matrix", "--profile=dcp-nightly", f"--out={folder}")
    command += [f"--backend={spec}" for spec in THIRDPARTY]
    with local_s3() as s3:
        pytest_args = [f"--dcp-root={s3.url('nightly')}", f"--dcp-xfails-file={THIRDPARTY_XFAILS}"]
        pytest_args += options.matrix_args
        return _run("thirdparty", options, [[*command, "--", *pytest_args]])


# The tests marked nightly: the multiprocess properties 20 times in a row, the suite under 20
# random seeds on reference, and each built-in's verdict under the night's seeds (below)
# against its dcp-ci one.
REPEAT_TESTS = ("tests/test_multiprocess_repeat.py", "tests/test_suite_repeat.py")
VERDICT_SEEDS = "tests/test_verdict_seeds.py"


def repeat_tests(shard: Shard) -> tuple[str, ...]:
    """What the repeat stage of ``shard`` runs: the first shard takes the two repeat files,
    every shard the verdict-seed tests of its share of the built-ins (the long part: one
    suite run per seed and built-in)."""
    if shard.whole:
        return (*REPEAT_TESTS, VERDICT_SEEDS)
    from spec_tests.backends import BUILTIN_NAMES

    seeds = VERDICT_SEEDS + "::test_verdict_is_the_same_under_every_seed"
    picked = tuple(f"{seeds}[{name}]" for name in shard.picks(BUILTIN_NAMES))
    return (*(REPEAT_TESTS if shard.index == 1 else ()), *picked)


#: The verdict-seed test's seeds: ``FIRST:COUNT``; unset, it tries seeds 1 to 20.
SEEDS_VARIABLE = "DCP_VERDICT_SEEDS"
#: Verdict-seed runs per built-in and night. Fixed seeds would draw the same examples every
#: night, so each night takes the next window of seeds: new draws every night, 20 in 5 nights,
#: at a fifth of the cost of 20 a night (the largest part of the repeat stage).
SEEDS_PER_NIGHT = 4


def night_seeds(day: datetime.date, per_night: int = SEEDS_PER_NIGHT) -> range:
    """The verdict seeds of the night of ``day``: windows of consecutive days follow each other."""
    first = day.toordinal() * per_night + 1
    return range(first, first + per_night)


def verdict_seeds(environ: Mapping[str, str], default: int) -> range:
    """The seeds :data:`SEEDS_VARIABLE` names in ``environ``, else ``1`` to ``default``."""
    text = environ.get(SEEDS_VARIABLE, "")
    if not text:
        return range(1, default + 1)
    first, _, count = text.partition(":")
    try:
        seeds = range(int(first), int(first) + int(count))
    except ValueError:
        seeds = range(0)
    if not seeds or seeds.start < 0:
        raise ValueError(f"{SEEDS_VARIABLE}: expected FIRST:COUNT (say 81:4), got {text!r}")
    return seeds


def _repeat(options: Options) -> StageResult:
    tests = repeat_tests(options.shard)
    if not tests:
        return _nothing("repeat", options)
    seeds = night_seeds(datetime.datetime.now(datetime.UTC).date())
    env = {SEEDS_VARIABLE: os.environ.get(SEEDS_VARIABLE) or f"{seeds.start}:{len(seeds)}"}
    command = _python("-m", "pytest", *tests, "--nightly", "-q")
    return _run("repeat", options, [[*command, "-p", "no:cacheprovider"]], env=env)


def _selftest(options: Options) -> StageResult:
    command = _python("-m", "spec_tests", "selftest", f"--out={options.out / 'selftest'}")
    return _run("selftest", options, [[*command, f"--jobs={max(options.jobs, 2)}"]])


def _perf(options: Options) -> StageResult:
    run = options.out / "perf.json"
    measure = _python("-m", "pytest", "perf", f"--benchmark-json={run}", *options.perf_args)
    measured = _run("perf", options, [measure])
    if measured.status == "failed":
        return measured
    # One report call prints the table, draws the chart beside the run and gates on the stored
    # baseline: exit 1 is a regression, 2 an unreadable run or baseline.
    gate = _python("-m", "perf.report", str(run), "--compare", str(options.perf_baseline))
    gated = _run("perf", options, [gate], log=options.out / "perf-gate.txt")
    detail = "the gate against the stored baseline passed"
    if gated.status == "failed":
        detail = f"the gate against {options.perf_baseline} failed: see {gated.logs[0]}"
    return dataclasses.replace(
        gated,
        seconds=measured.seconds + gated.seconds,
        detail=detail,
        logs=measured.logs + gated.logs,
    )


def _mutation(options: Options) -> StageResult:
    return _run("mutation", options, [_python("tools/mutation.py", "run", *options.mutation_args)])


#: The stages in the order the nightly runs them.
STAGES: dict[str, Callable[[Options], StageResult]] = {
    "matrix": _matrix,
    "thirdparty": _thirdparty,
    "repeat": _repeat,
    "selftest": _selftest,
    "perf": _perf,
    "mutation": _mutation,
}
