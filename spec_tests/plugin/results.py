"""The conformance matrix: per-test result records, their aggregation and rendering.

One suite run per backend writes a JSON result file (``--dcp-report=PATH``,
recorded by :class:`Recorder` from pytest's reports). :func:`aggregate` folds
the files into properties x backends, where a property is
``<module-stem>::<test function>`` and a cell is the worst outcome over that
property's tests. The ``torch_planning`` properties test torch itself, not the
backend: they are shown as a group of their own and never count in a backend's
verdict. Pure Python on purpose: the plugin imports this module, and it must stay
cheap to import.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FAILING",
    "OUTCOMES",
    "BackendResult",
    "Cell",
    "Matrix",
    "Recorder",
    "TestRecord",
    "TORCH_GROUP",
    "aggregate",
    "counts_line",
    "failed_run",
    "first_line",
    "load_result",
    "render_markdown",
    "to_json",
    "verdict",
]

#: Outcomes from worst to best; a cell shows the worst one among its tests. ``refuses``: a
#: test that passed because the backend refused an unclaimed capability loudly.
OUTCOMES: tuple[str, ...] = ("error", "fail", "xpass", "xfail", "refuses", "pass", "skip")
#: Module stem of the properties that test torch's own code (the same for every backend).
TORCH_GROUP = "torch_planning"
#: The outcomes that fail a backend: a test failed, errored or passed against its entry.
FAILING = frozenset({"error", "fail", "xpass"})
REPORT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class TestRecord:
    """The outcome of one collected test (one parametrization) and why."""

    __test__ = False  # not a pytest test class despite the name

    nodeid: str  # as xfail entries name it: relative to the spec_tests package for its tests
    property: str
    outcome: str
    reason: str = ""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"test outcome {self.outcome!r}: expected one of {OUTCOMES}")


@dataclass(frozen=True, slots=True)
class BackendResult:
    """One backend's run: its test records, or the error that stopped it from running."""

    backend: str
    tests: tuple[TestRecord, ...] = ()
    exitstatus: int = 0
    capabilities: tuple[str, ...] | None = None
    unmatched_xfails: tuple[str, ...] = ()
    error: str | None = None
    seconds: float | None = None  # how long the backend's suite run took

    @property
    def backend_tests(self) -> tuple[TestRecord, ...]:
        """The tests that judge the backend (the torch group's are torch's)."""
        return tuple(t for t in self.tests if not in_torch_group(t.property))

    @property
    def totals(self) -> dict[str, int]:
        """How many tests ended in each outcome (every outcome present, zeros included)."""
        counts = Counter(t.outcome for t in self.tests)
        if self.error is not None:
            counts["error"] += 1
        return {o: counts[o] for o in OUTCOMES}

    @property
    def failed(self) -> bool:
        """Whether this backend fails the conformance gate."""
        return (
            self.error is not None
            or self.exitstatus != 0
            or bool(FAILING & {t.outcome for t in self.tests})
        )


def in_torch_group(prop: str) -> bool:
    """Whether the property ``prop`` tests torch itself rather than the backend."""
    return prop.split("::", 1)[0] == TORCH_GROUP


def verdict(result: BackendResult) -> str:
    """The verdict word, from the backend's own tests (the torch group never counts).

    - ``fails``: a test failed, errored or passed against its expected-failure entry;
    - ``conforms``: every test passed, refused loudly or was skipped;
    - ``conforms except N listed bugs``: N tests failed as their entries say;
    - ``mostly unusable (N listed bugs)``: those N are more than the tests that held (passes
      and loud refusals): a backend passing 2 properties of 84 conforms to nothing useful.
    """
    if result.failed:
        return "fails"
    counts = Counter(t.outcome for t in result.backend_tests)
    known, held = counts["xfail"], counts["pass"] + counts["refuses"]
    bugs = f"{known} listed bug{'s' if known > 1 else ''}"
    if not known:
        return "conforms"
    if known > held:
        return f"mostly unusable ({bugs})"
    return f"conforms except {bugs}"


def counts_line(result: BackendResult) -> str:
    """``12 passed, 3 known failures, 0 unexpected, 5 skipped, 2 refuses`` (its own tests)."""
    counts = Counter(t.outcome for t in result.backend_tests)
    unexpected = sum(counts[o] for o in FAILING) + (result.error is not None)
    return (
        f"{counts['pass']} passed, {counts['xfail']} known failures, {unexpected} unexpected, "
        f"{counts['skip']} skipped, {counts['refuses']} refuses"
    )


def failed_run(backend: str, error: str) -> BackendResult:
    """The result of a backend whose suite run produced no report (import error, crash)."""
    return BackendResult(backend=backend, exitstatus=-1, error=error or "the suite run failed")


def load_result(path: Path) -> BackendResult:
    """Read a result file written by :class:`Recorder`."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    if raw.get("format") != REPORT_FORMAT:
        raise ValueError(f"{path}: result format {raw.get('format')!r}, expected {REPORT_FORMAT}")
    caps = raw.get("capabilities")
    return BackendResult(
        backend=raw["backend"],
        tests=tuple(TestRecord(**t) for t in raw["tests"]),
        exitstatus=int(raw["exitstatus"]),
        capabilities=None if caps is None else tuple(caps),
        unmatched_xfails=tuple(raw.get("unmatched_xfails", ())),
        seconds=raw.get("seconds"),
    )


class Recorder:
    """Collects one record per test from pytest's reports (used by the plugin's --dcp-report)."""

    def __init__(self) -> None:
        # pytest nodeid -> (the id xfail entries use, property name); set after collection
        self.names: dict[str, tuple[str, str]] = {}
        self.records: dict[str, TestRecord] = {}

    def add(self, report: Any) -> None:
        """Fold in one ``pytest.TestReport`` (setup, call or teardown phase)."""
        found = _outcome(report)
        if found is None:
            return
        outcome, reason = found
        previous = self.records.get(report.nodeid)
        # A teardown error must not hide behind an earlier pass; otherwise the first verdict stands.
        if previous is not None and OUTCOMES.index(previous.outcome) <= OUTCOMES.index(outcome):
            return
        shown, prop = self.names.get(report.nodeid, (report.nodeid, report.nodeid.split("[")[0]))
        self.records[report.nodeid] = TestRecord(shown, prop, outcome, reason)

    def add_collection_error(self, report: Any) -> None:
        """Record a module that failed to collect (import error, bad fixture) as an error."""
        stem = Path(str(report.nodeid).split("::")[0]).stem.removeprefix("test_")
        prop = f"{stem}::(collection)"
        self.records[report.nodeid] = TestRecord(report.nodeid, prop, "error", first_line(report))

    def write(self, path: Path, **fields: Any) -> None:
        """Write the result file: the records plus backend, exitstatus, capabilities, ..."""
        payload = {"format": REPORT_FORMAT, **fields}
        payload["tests"] = [asdict(r) for r in self.records.values()]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=1), encoding="utf-8")


def _outcome(report: Any) -> tuple[str, str] | None:
    if report.when == "call" and report.failed and str(report.longrepr).startswith("[XPASS"):
        return "xpass", str(report.longrepr).removeprefix("[XPASS(strict)] ")
    if hasattr(report, "wasxfail"):
        if report.passed:  # a non-strict entry's test passed this run: no failure
            return (
                "pass",
                f"listed as an expected failure that this run's draws missed: {report.wasxfail}",
            )
        return "xfail", str(report.wasxfail)
    if report.failed:
        phase = "" if report.when == "call" else f"error in {report.when}: "
        return "fail", phase + first_line(report)
    noted = dict(getattr(report, "user_properties", ()))
    if report.when == "call" and noted.get("dcp_outcome") == "refuses":
        # spec_tests.properties.unclaimed.record_refusal marks a loud refusal this way.
        return "refuses", f"refused {noted.get('dcp_refused', 'an unclaimed capability')} loudly"
    if report.skipped:
        longrepr = report.longrepr
        text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return "skip", text.removeprefix("Skipped: ")
    if report.when == "call":
        return "pass", ""
    return None


# An exception line inside a printed exception group: "    | ValueError: message".
_GROUPED_ERROR = re.compile(r"^\s*\|\s+((?:[A-Za-z_][\w.]*)(?:Error|Exception|Exit)\b.*)$", re.M)


def first_line(report: Any) -> str:
    """A failed report's error in one line (an exception group's first failure named too)."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = lines[0].strip() if lines else "failed"
    if first.endswith(":") and len(lines) > 1:
        # e.g. torch's ProcessRaisedException puts the child's error on its last line
        first = f"{first} {lines[-1].strip()}"
    if first.startswith(("ExceptionGroup", "BaseExceptionGroup")):
        # hypothesis reports several distinct failures as a group: name the first of them too.
        inner = _GROUPED_ERROR.search(str(getattr(report, "longreprtext", "")))
        if inner is not None:
            first = f"{first.split(': ', 1)[-1]} First: {inner.group(1).strip()}"
    return first


# --- aggregation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cell:
    """One property on one backend: the worst outcome and how many tests had each outcome."""

    outcome: str
    counts: dict[str, int] = field(default_factory=dict)

    def render(self) -> str:
        """``fail (1/3)``: the worst outcome and how many of the property's tests had it."""
        total = sum(self.counts.values())
        if total <= 1:
            return self.outcome
        return f"{self.outcome} ({self.counts.get(self.outcome, 0)}/{total})"


@dataclass(frozen=True, slots=True)
class Matrix:
    """Properties x backends."""

    backends: tuple[BackendResult, ...]
    properties: tuple[str, ...]
    cells: dict[tuple[str, str], Cell]

    @property
    def failed(self) -> bool:
        """Whether any backend fails the gate."""
        return any(b.failed for b in self.backends)


def aggregate(results: list[BackendResult]) -> Matrix:
    """Fold backend results into a matrix; a backend that did not run is all ``error``."""
    properties = sorted({t.property for r in results for t in r.tests})
    cells: dict[tuple[str, str], Cell] = {}
    for result in results:
        per_property: dict[str, Counter[str]] = {}
        for test in result.tests:
            per_property.setdefault(test.property, Counter())[test.outcome] += 1
        for prop in properties:
            counts = per_property.get(prop)
            if result.error is not None:
                cells[prop, result.backend] = Cell("error", {"error": 1})
            elif counts:
                worst = min(counts, key=OUTCOMES.index)
                cells[prop, result.backend] = Cell(worst, dict(counts))
    return Matrix(tuple(results), tuple(properties), cells)


_LEGEND = (
    "Each cell is the worst outcome over that property's tests "
    "(error > fail > xpass > xfail > refuses > pass > skip); `(k/n)`: k of its n tests had that "
    "outcome. `xfail`: a listed expected failure, failing the way its entry says; `xpass`: a "
    "listed expected failure that now passes (counts as a failure: remove the entry); "
    "`refuses`: the backend does not claim the capability and refused it loudly (raised) "
    "instead of getting it silently wrong; `skip`: the backend does not claim a capability "
    "the property needs; `error`: the suite could not run on that backend."
)
_TORCH_LEGEND = (
    "These properties test torch's own code that `dcp.save` runs before any backend call "
    "(a torch-upgrade check): they do not depend on the backend and never count in a "
    "backend's verdict. `xfail` here is a known bug of this torch version."
)


def render_markdown(matrix: Matrix) -> str:
    """The matrix as Markdown: legend, tables, per-backend verdicts and the failures' reasons."""
    names = [b.backend for b in matrix.backends]
    own = [p for p in matrix.properties if not in_torch_group(p)]
    torch_props = [p for p in matrix.properties if in_torch_group(p)]
    lines = ["# DCP conformance matrix", "", _LEGEND, ""]
    lines += _table(matrix, own, names)
    if torch_props:
        lines += ["", "## torch itself (the same in every backend's run)", "", _TORCH_LEGEND, ""]
        lines += _table(matrix, torch_props, names)
    lines += ["", "## Verdicts", "", _row(["backend", "verdict", "run time", *OUTCOMES])]
    lines.append(_row(["---"] * (len(OUTCOMES) + 3)))
    for result in matrix.backends:
        totals = result.totals
        shown = f"**{verdict(result)}**" if result.failed else verdict(result)
        took = "-" if result.seconds is None else f"{result.seconds:.0f} s"
        lines.append(_row([result.backend, shown, took, *(str(totals[o]) for o in OUTCOMES)]))
    problems = _problems(matrix)
    if problems:
        lines += ["", "## Failures", "", *problems]
    lines.append("")
    return "\n".join(lines)


def _table(matrix: Matrix, properties: list[str], names: list[str]) -> list[str]:
    lines = [_row(["property", *names]), _row(["---"] * (len(names) + 1))]
    for prop in properties:
        cells = [matrix.cells.get((prop, n), Cell("-")).render() for n in names]
        lines.append(_row([f"`{prop}`", *cells]))
    return lines


def _problems(matrix: Matrix) -> list[str]:
    out = []
    for result in matrix.backends:
        if result.error is not None:
            out.append(f"- **{result.backend}**: did not run: {_one_line(result.error)}")
            continue
        for test in result.tests:
            if test.outcome in FAILING:
                label = "unexpectedly passed" if test.outcome == "xpass" else test.outcome
                out.append(
                    f"- **{result.backend}** `{test.nodeid}` {label}: {_one_line(test.reason)}"
                )
        out += [
            f"- **{result.backend}**: xfail entry matches nothing: {e}"
            for e in result.unmatched_xfails
        ]
        if result.exitstatus != 0 and not any(t.outcome in FAILING for t in result.tests):
            out.append(f"- **{result.backend}**: pytest exited with status {result.exitstatus}")
    return out


def _one_line(text: str, limit: int = 240) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else "(no reason given)"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def to_json(matrix: Matrix) -> dict[str, Any]:
    """The matrix as plain JSON data (``matrix.json``)."""
    return {
        "outcomes": list(OUTCOMES),
        "torch_group": [p for p in matrix.properties if in_torch_group(p)],
        "failed": matrix.failed,
        "backends": [
            {
                "backend": r.backend,
                "failed": r.failed,
                "verdict": verdict(r),
                "seconds": r.seconds,
                "exitstatus": r.exitstatus,
                "error": r.error,
                "capabilities": None if r.capabilities is None else list(r.capabilities),
                "totals": r.totals,
                "unmatched_xfails": list(r.unmatched_xfails),
                "problems": [asdict(t) for t in r.tests if t.outcome in FAILING],
            }
            for r in matrix.backends
        ],
        "properties": {
            prop: {
                name: {"outcome": cell.outcome, "counts": cell.counts}
                for (p, name), cell in matrix.cells.items()
                if p == prop
            }
            for prop in matrix.properties
        },
    }
