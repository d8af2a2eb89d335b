"""What each stage of the nightly runs, and the record it leaves.

Every stage is a subprocess of this Python (the venv nox made), its output in
``OUT/stages/<stage>.log``; a stage fails when its command exits non-zero, and the next one
runs all the same: one broken stage must not hide what the others found.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nightly._matrix import publish_matrix

__all__ = [
    "MUTATION_ARGS",
    "PERF_BASELINE",
    "STAGES",
    "Options",
    "StageResult",
    "THIRDPARTY",
    "THIRDPARTY_XFAILS",
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
class Options:
    """What the command line chose (see ``python -m nightly --help``)."""

    out: Path
    backends: tuple[str, ...] = ()  # the matrix's built-ins; empty: every one
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
    stage: str, options: Options, commands: Sequence[Sequence[str]], *, log: Path | None = None
) -> StageResult:
    """Run ``commands`` one after the other into the stage's log; failed if any exits non-zero."""
    log = log or options.out / "stages" / f"{stage}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    codes = []
    with log.open("w", encoding="utf-8") as sink:
        for command in commands:
            sink.write(f"$ {shlex.join(command)}\n")
            sink.flush()
            codes.append(subprocess.call(command, stdout=sink, stderr=subprocess.STDOUT))
    seconds = time.monotonic() - start
    if not any(codes):
        return StageResult(stage, "passed", seconds, logs=(str(log),))
    why = f"exit status {', '.join(map(str, codes))}: see {log}"
    return StageResult(stage, "failed", seconds, why, (str(log),))


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _matrix(options: Options) -> StageResult:
    folder = options.out / "matrix-runs" / "builtins"
    command = _python("-m", "spec_tests", "matrix", "--profile=dcp-nightly")
    command += [f"--jobs={options.jobs}", f"--out={folder}"]
    command += [f"--backend={b}" for b in options.backends]
    result = _run("matrix", options, [[*command, "--", *options.matrix_args]])
    publish_matrix(options.out)
    return result


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
        result = _run("thirdparty", options, [[*command, "--", *pytest_args]])
    publish_matrix(options.out)
    return result


# The tests marked nightly: the multiprocess properties 20 times in a row, the suite under 20
# random seeds on reference, and each built-in's verdict under 20 seeds against its dcp-ci one.
REPEAT_TESTS = (
    "tests/test_multiprocess_repeat.py",
    "tests/test_suite_repeat.py",
    "tests/test_verdict_seeds.py",
)


def _repeat(options: Options) -> StageResult:
    command = _python("-m", "pytest", *REPEAT_TESTS, "--nightly", "-q")
    return _run("repeat", options, [[*command, "-p", "no:cacheprovider"]])


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
