"""Failure output made for a human: rerun commands, an early stop and an end-of-run summary.

A suite run (``pytest --pyargs spec_tests ...``) registers :class:`FailureSummary`. It

- stops the run once ``--dcp-maxfail`` properties have failed (3 by default, when neither
  ``-x`` / ``--maxfail`` nor ``--dcp-report`` is given): one planted bug otherwise fails
  dozens of properties and prints thousands of lines;
- ends the run with one block per failed property: its first error, its shortest shrunk
  example and the one command that replays that example (:func:`rerun_command`).

Cheap to import (the plugin loads it in every suite run): stdlib and pytest only.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from spec_tests.contract.replay import RUN, RunInfo, replay_note

if TYPE_CHECKING:
    from spec_tests.backends import Backend

__all__ = [
    "DEFAULT_MAXFAIL",
    "RUN",
    "FailureSummary",
    "RunInfo",
    "header_lines",
    "replay_note",
    "rerun_command",
    "short_repr",
    "shortest_example",
    "start_summary",
]

#: Failed properties after which a suite run stops, unless -x, --maxfail or --dcp-maxfail say.
DEFAULT_MAXFAIL = 3
_EXAMPLE_START = ("Falsifying example:", "Failing test case:")
_EXAMPLE_END = ("Explanation:", "You can reproduce", "Traceback", "+--", "Unreliable")
# Failing-example lines that say nothing about the example (fixtures, the test's self).
_MARGIN = re.compile(r"^(E\s|\s*\|)")  # pytest's error margin; an exception group's
_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Violation|Bug|Exit)\b: ")
_NOISE = re.compile(r"^\s*(self=|dcp_backend=|dcp_location=|dcp_backend_spec=|data=data\(|\)$)")


def rerun_command(item: pytest.Item, run: RunInfo = RUN) -> str:
    """The command that reruns ``item`` alone, with this run's backend, profile and seed."""
    module = getattr(getattr(item, "module", None), "__name__", "")
    name = getattr(item, "originalname", item.name)
    if module.startswith("spec_tests.test_"):
        target = ["--pyargs", module, "-k", name]
    else:  # a kit subclass in the author's own test file
        target = [item.nodeid.split("[", 1)[0]]
    words = ["python", "-m", "pytest", *target, f"--dcp-backend={run.spec}"]
    words.append(f"--hypothesis-profile={run.profile}")
    if run.seed is not None:
        words.append(f"--hypothesis-seed={run.seed}")
    if run.root is not None:
        words.append(f"--dcp-root={run.root}")
    return shlex.join(words)


def shortest_example(text: str) -> tuple[str, list[str]]:
    """The shortest failing example hypothesis printed in ``text`` (a failure's report), and
    the error raised just before it was printed: ``("", [])`` when there is none."""
    examples: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    error = ""
    for raw in text.splitlines():
        line = _MARGIN.sub("", raw).strip()
        if line.startswith(_EXAMPLE_START):
            current = [line]
            examples.append((error, current))
        elif current is not None:
            if not line or line.startswith(_EXAMPLE_END):
                current = None
            elif not _NOISE.match(line):
                current.append(line)
        elif _ERROR.match(line):
            error = line
    if not examples:
        return "", []
    error, lines = min(examples, key=lambda ex: sum(map(len, ex[1])))
    return error, lines[:12]


@dataclass(slots=True)
class _Failed:
    nodeid: str
    error: str
    example: list[str]
    rerun: str


class FailureSummary:
    """Stops a suite run after ``maxfail`` failed properties; prints the summary at its end."""

    def __init__(self, maxfail: int, run: RunInfo = RUN) -> None:
        self.maxfail = maxfail  # 0: never stop early
        self.run = run
        self.failed: list[_Failed] = []
        self.reruns: dict[str, str] = {}
        self.session: pytest.Session | None = None
        self.seen: set[str] = set()  # tests that reported
        self.stopped = False

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session

    def pytest_report_header(self) -> list[str]:
        stop = (
            f"stops after {self.maxfail} failing properties (--dcp-maxfail=0: never; -x: at the "
            "first)"
            if self.maxfail
            else "runs every property"
        )
        return [f"dcp run: {stop}; a summary with rerun commands ends the run"]

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.reruns = {item.nodeid: rerun_command(item, self.run) for item in session.items}

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.run.current = self.reruns.get(item.nodeid, "")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seen.add(report.nodeid)
        if not report.failed or hasattr(report, "wasxfail"):
            return
        if any(f.nodeid == report.nodeid for f in self.failed):
            return  # a teardown error after a failed call: one property, one entry
        from spec_tests.plugin.results import first_line

        error, example = shortest_example(report.longreprtext)
        rerun = self.reruns.get(report.nodeid, "")
        self.failed.append(_Failed(report.nodeid, error or first_line(report), example, rerun))
        if self.maxfail and len(self.failed) >= self.maxfail and self.session is not None:
            self.stopped = True
            self.session.shouldfail = (  # as --maxfail does: exit status 1, not interrupted
                f"dcp: {len(self.failed)} properties failed (--dcp-maxfail={self.maxfail})"
            )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.failed:
            return
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "dcp conformance failures", red=True)
        for n, failed in enumerate(self.failed, 1):
            write(f"{n}. {failed.nodeid}")
            write(f"   error: {failed.error}")
            for line in failed.example:
                write(f"   {line}")
            write(f"   replay: {failed.rerun}")
        write(f"   ({replay_note(self.run)})")
        if self.stopped and self.session is not None:
            left = len(self.session.items) - len(self.seen)
            write(
                f"stopped early after {len(self.failed)} failed properties "
                f"(--dcp-maxfail={self.maxfail}, the default): {left} tests not run. "
                "Fix these first; --dcp-maxfail=0 runs everything, -x stops at the first."
            )


def start_summary(config: pytest.Config, spec: str, root: str | None) -> None:
    """Record the rerun commands' facts; register the early stop and the summary."""
    from hypothesis import settings

    seed = config.getoption("--hypothesis-seed", None)
    RUN.spec, RUN.root, RUN.seed = spec, root, None if seed is None else str(seed)
    # hypothesis loads --hypothesis-profile after the suite's pytest_configure: ask the option.
    RUN.profile = config.getoption("--hypothesis-profile", None) or (
        settings.get_current_profile_name()
    )
    current = settings.get_profile(RUN.profile)
    RUN.derandomized, RUN.database = current.derandomize, current.database is not None
    report = config.getoption("--dcp-report")
    if config.option.tbstyle == "auto" and not report:
        # One line a frame on a terminal: the example is what matters. The matrix's logs
        # (--dcp-report runs) keep the long tracebacks.
        config.option.tbstyle = "short"
    maxfail = config.getoption("--dcp-maxfail")
    if maxfail is None:  # -x / --maxfail are the user's own choice; the matrix wants every test
        explicit = config.option.maxfail or report
        maxfail = 0 if explicit else DEFAULT_MAXFAIL
    config.pluginmanager.register(FailureSummary(maxfail), "dcp_spec_summary")


def header_lines(backend: Backend, spec: str) -> list[str]:
    """The backend and everything it claims: printed once, in the run's header."""
    from spec_tests.backends import CAPABILITIES

    caps = CAPABILITIES.keys() if backend.capabilities is None else backend.capabilities
    dtypes = [c for c in CAPABILITIES if c.startswith("dtype:") and c in caps]
    others = [c for c in CAPABILITIES if not c.startswith("dtype:")]
    lacking = [c for c in others if c not in caps]
    return [
        f"dcp backend: {backend.name} (spec {spec!r}); "
        f"claims {', '.join(c for c in others if c in caps) or 'no general capability'}"
        + (f"; not {', '.join(lacking)}" if lacking else ""),
        f"dcp dtypes: {len(dtypes)} of {sum(c.startswith('dtype:') for c in CAPABILITIES)}: "
        + ", ".join(d.removeprefix("dtype:") for d in dtypes),
    ]


def short_repr(cls: type) -> None:
    """Hypothesis prints backends of ``cls`` as ``<backend NAME>`` in failing examples.

    Its capability set (a dataclass field, say) would otherwise be printed in every failure,
    one line per capability: hundreds of lines a run, for what the header says once.
    """
    from hypothesis.vendor.pretty import for_type_by_name

    def printer(obj: Any, p: Any, cycle: bool) -> None:
        p.text(f"<backend {getattr(obj, 'name', '?')!r}>")

    for_type_by_name(cls.__module__, cls.__name__, printer)
