"""One run of the conformance suite on one backend, in its own pytest subprocess.

Shared by ``python -m spec_tests matrix`` and ``python -m spec_tests selftest``: a
backend that crashes or cannot be imported becomes a failed result, not a crash of
the command.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from spec_tests.plugin.results import BackendResult, failed_run, load_result

__all__ = ["HEARTBEAT_S", "Progress", "run_backend"]

#: Seconds between "still running" lines of a long suite run.
HEARTBEAT_S = 60.0


def run_backend(
    spec: str,
    out: Path,
    *,
    suite: Sequence[str],
    profile: str | None,
    extra: Sequence[str],
    heartbeat: Callable[[float], None] | None = None,
) -> BackendResult:
    """Run the suite on one backend in a subprocess; its result, with the run's duration.

    ``heartbeat(seconds)`` is called every :data:`HEARTBEAT_S` while the run goes on, so that a
    long run is never silent (nox and CI logs are piped).
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)
    report, log = out / "results" / f"{slug}.json", out / "logs" / f"{slug}.log"
    report.unlink(missing_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pytest",
        *suite,
        f"--dcp-backend={spec}",
        f"--dcp-report={report}",
        "-p",
        "no:cacheprovider",
        *(["--hypothesis-profile", profile] if profile else []),
        *extra,
    ]
    with log.open("w", encoding="utf-8") as sink:
        sink.write(" ".join(command) + "\n\n")
        sink.flush()
        start = time.monotonic()
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        returncode = _wait(child, start, heartbeat)
        seconds = time.monotonic() - start
    if not report.is_file():
        result = failed_run(spec, f"{_why(log)} (pytest exit status {returncode})")
    else:
        result = load_result(report)
    return dataclasses.replace(result, seconds=seconds)


def _wait(
    child: subprocess.Popen[bytes], start: float, heartbeat: Callable[[float], None] | None
) -> int:
    while True:
        try:
            return child.wait(timeout=HEARTBEAT_S)
        except subprocess.TimeoutExpired:
            if heartbeat is not None:
                heartbeat(time.monotonic() - start)


class Progress:
    """``[k/n] +SECONDS what``: one flushed line on stderr per event, numbered, timed."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.start = time.monotonic()
        self.lock = threading.Lock()  # the lines of parallel runs must not interleave

    def say(self, n: int, what: str) -> None:
        """Print one progress line about the ``n``-th of ``total`` runs."""
        elapsed = time.monotonic() - self.start
        with self.lock:
            print(f"[{n}/{self.total}] +{elapsed:.0f} s {what}", file=sys.stderr, flush=True)


def _why(log: Path) -> str:
    """The reason a run left no result file: pytest's ERROR lines, else the log's last lines."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[1:]  # skip the command
    lines = [line.strip() for line in lines if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    return " / ".join(errors or lines[-3:]) or "no output"
