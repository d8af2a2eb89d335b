"""The rows of a perf/ run: what each benchmark measured, scored against its same-run reference."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "KINDS",
    "KIND_ORDER",
    "ReportError",
    "Row",
    "Scored",
    "describe_run",
    "format_table",
    "limit_of",
    "load_rows",
    "markdown_table",
    "median_of_runs",
    "read_document",
    "rows_from",
    "score",
]


#: What a benchmark row measures: a backend under test, a baseline it is compared with, or the
#: hardware limit (perf/bench.py labels every benchmark with one; the order is the table's).
KINDS = ("backend", "baseline", "limit")
KIND_ORDER = {kind: n for n, kind in enumerate(KINDS)}
_LABELS = ("op", "workload", "subject", "kind", "nbytes")


class ReportError(ValueError):
    """A results file that cannot be read as a perf/ pytest-benchmark run."""


@dataclass(frozen=True, slots=True)
class Row:
    """One benchmark of a run: its labels and its median time per round."""

    key: str  # the benchmark's full node id: what --compare matches on
    op: str
    workload: str
    subject: str
    kind: str
    nbytes: int
    device: str
    median: float  # seconds
    procs: int = 1  # processes that moved ``nbytes`` together (mp-* operations)

    def __post_init__(self) -> None:
        if self.kind not in KIND_ORDER:
            raise ReportError(
                f"{self.key}: kind must be one of {sorted(KIND_ORDER)}, got {self.kind!r}"
            )
        if not (self.median > 0 and math.isfinite(self.median)) or self.nbytes < 0:
            raise ReportError(
                f"{self.key}: expected a positive median and nbytes >= 0, "
                f"got median={self.median!r}, nbytes={self.nbytes!r}"
            )

    @property
    def gbps(self) -> float | None:
        """Throughput in GB/s (1e9 bytes); None where no bytes are moved (metadata)."""
        return self.nbytes / self.median / 1e9 if self.nbytes else None


@dataclass(frozen=True, slots=True)
class Scored:
    """A row with its throughput ratios to the references of the same run."""

    row: Row
    vs_baseline: float | None  # GB/s over the best baseline of (op, workload, device)
    vs_limit: float | None  # GB/s over the fastest limit of (workload, device)
    versus: tuple[float | None, ...] = ()
    """GB/s over each ``versus`` subject's of the same (op, workload, device): see :func:`score`."""

    @property
    def ratio(self) -> float | None:
        """The ratio --compare gates on: to the best baseline, else (baselines) to the limit."""
        if self.row.kind == "backend":
            return self.vs_baseline
        if self.row.kind == "baseline":
            return self.vs_limit
        return None  # a limit is the reference itself


def _row(bench: dict[str, object]) -> Row | None:
    key = str(bench.get("fullname") or bench.get("name"))
    info = bench.get("extra_info")
    if not isinstance(info, dict) or not all(label in info for label in _LABELS):
        return None  # not a perf/ benchmark
    stats = bench.get("stats")
    if not isinstance(stats, dict) or not isinstance(stats.get("median"), int | float):
        raise ReportError(f"{key}: expected stats.median, a number; got stats={stats!r}")
    try:
        nbytes = int(info["nbytes"])
    except (TypeError, ValueError) as err:
        raise ReportError(f"{key}: expected extra_info.nbytes, an integer: {err}") from err
    return Row(
        key,
        str(info["op"]),
        str(info["workload"]),
        str(info["subject"]),
        str(info["kind"]),
        nbytes,
        str(info.get("device", "cpu")),
        float(stats["median"]),
        _procs(key, info.get("procs", 1)),
    )


def _procs(key: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ReportError(f"{key}: expected extra_info.procs, an integer >= 1; got {value!r}")
    return value


def rows_from(document: object, source: str) -> list[Row]:
    """The perf/ benchmarks of a parsed pytest-benchmark document (others are left out)."""
    benches = document.get("benchmarks") if isinstance(document, dict) else None
    if not isinstance(benches, list):
        raise ReportError(f"{source}: expected a 'benchmarks' list, found {type(benches).__name__}")
    rows = [row for bench in benches if (row := _row(bench)) is not None]
    if not rows:
        raise ReportError(
            f"{source}: no timed perf/ benchmarks in it (was it run with --benchmark-disable?)"
        )
    return rows


def read_document(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: expected a pytest-benchmark JSON file: {err}") from err


def load_rows(path: Path) -> list[Row]:
    """The perf/ benchmarks of a pytest-benchmark JSON file (others are left out)."""
    return rows_from(read_document(path), str(path))


def describe_run(document: object, source: str) -> str:
    """One line on where and how a run was taken: host, date, torch, size, rounds."""
    if not isinstance(document, dict):
        return f"{source}: ?"
    machine = document.get("machine_info") or {}
    info = document.get("perf") or {}
    parts = [
        f"host {machine.get('node', '?')}",
        str(document.get("datetime", "?")),
        f"torch {info.get('torch', '?')}",
        f"size {info.get('size', '?')} B",
        f"{info.get('rounds', '?')} rounds",
    ]
    if info.get("cuda"):
        parts.append(str(info["cuda"]))
    return f"{source}: " + ", ".join(parts)


def _best(rows: Iterable[Row]) -> float | None:
    rates = [r.gbps for r in rows if r.gbps is not None]
    return max(rates) if rates else None


def _over(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def limit_of(rows: Iterable[Row], workload: str, device: str) -> float | None:
    """GB/s of the fastest limit measured for ``workload`` on ``device``."""
    return _best(
        r for r in rows if r.kind == "limit" and (r.workload, r.device) == (workload, device)
    )


def score(rows: Sequence[Row], versus: Sequence[str] = ()) -> list[Scored]:
    """Each row with its ratios to the best baseline and to the limit measured beside it.

    ``versus`` names more references, one ratio each (``Scored.versus``): a subject such as
    ``torch-hf``, or a template in which ``{subject}`` stands for the row's own subject, so that
    ``{subject}-noverify`` gives each backend's ratio to its own variant without verification.
    A reference missing from the run, or the row itself, gives None.
    """
    rate = {(r.op, r.workload, r.device, r.subject): r.gbps for r in rows}
    out = []
    for row in rows:
        baseline = _best(
            r
            for r in rows
            if r.kind == "baseline"
            and (r.op, r.workload, r.device) == (row.op, row.workload, row.device)
        )
        limit = limit_of(rows, row.workload, row.device)
        others = tuple(template.replace("{subject}", row.subject) for template in versus)
        against = tuple(
            None
            if other == row.subject
            else _over(row.gbps, rate.get((row.op, row.workload, row.device, other)))
            for other in others
        )
        out.append(Scored(row, _over(row.gbps, baseline), _over(row.gbps, limit), against))
    return out


def median_of_runs(runs: Sequence[Sequence[Scored]]) -> list[Scored]:
    """Several runs of the same benchmarks as one: each benchmark's median time is the median
    of its runs' medians, and each ratio the median of its runs' ratios (ratios are taken
    within a run, where the reference ran beside the row, never across runs). A benchmark
    missing from some runs is the median of the runs that have it."""
    by_key: dict[str, list[Scored]] = {}
    for run in runs:
        for scored in run:
            by_key.setdefault(scored.row.key, []).append(scored)
    return [
        Scored(
            dataclasses.replace(
                group[0].row, median=statistics.median(s.row.median for s in group)
            ),
            _median(s.vs_baseline for s in group),
            _median(s.vs_limit for s in group),
            tuple(_median(column) for column in zip(*(s.versus for s in group), strict=True)),
        )
        for group in by_key.values()
    ]


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def format_table(scored: Sequence[Scored], versus: Sequence[str] = ()) -> str:
    """The run as a text table: one line per benchmark, grouped by operation and workload;
    one more column per ``versus`` reference (the names given to :func:`score`)."""
    ordered = sorted(
        scored,
        key=lambda s: (
            s.row.op,
            s.row.device,
            s.row.workload,
            KIND_ORDER[s.row.kind],
            -(s.row.gbps or 0.0),
            s.row.median,
        ),
    )
    lines = [
        (
            s.row.op,
            s.row.device,
            s.row.workload,
            s.row.subject,
            s.row.kind,
            f"{s.row.median * 1e3:.2f}",
            _num(s.row.gbps, ".2f"),
            _num(s.vs_baseline, ".2f"),
            _num(s.vs_limit, ".2f"),
            *(_num(s.versus[n] if n < len(s.versus) else None, ".2f") for n in range(len(versus))),
        )
        for s in ordered
    ]
    header = (
        "op",
        "device",
        "workload",
        "subject",
        "kind",
        "median ms",
        "GB/s",
        "x best baseline",
        "x limit",
        *(f"x {name}" for name in versus),
    )
    return markdown_table(header, lines)
