"""Read a pytest-benchmark JSON of perf/: print the table, draw the chart, gate on regressions.

Usage::

    python -m perf.report RUN.json                      # table + RUN.png
    python -m perf.report RUN.json --compare perf/baselines/NAME.json [--threshold 10%]

Each benchmark row carries labels in ``extra_info`` (see perf/_bench.py): the
operation, workload, subject (backend / baseline / limit name), its kind, the
bytes moved per round and the device. Throughput is compared as a RATIO to a
reference measured in the same run (a backend against the best baseline of its
operation and workload, a baseline against the hardware limit), because a
ratio survives a noisy or slower machine and a raw time does not. Raw medians
are the secondary signal, and the only one for rows without a reference.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "KINDS",
    "ReportError",
    "Row",
    "Scored",
    "Change",
    "rows_from",
    "load_rows",
    "describe_run",
    "score",
    "format_table",
    "compare",
    "format_comparison",
    "write_chart",
    "parse_threshold",
    "main",
]

#: What a benchmark row measures: a backend under test, a baseline it is compared with, or the
#: hardware limit (perf/_bench.py labels every benchmark with one; the order is the table's).
KINDS = ("backend", "baseline", "limit")
_KIND_ORDER = {kind: n for n, kind in enumerate(KINDS)}
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

    def __post_init__(self) -> None:
        if self.kind not in _KIND_ORDER:
            raise ReportError(
                f"{self.key}: kind must be one of {sorted(_KIND_ORDER)}, got {self.kind!r}"
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
    )


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


def _read(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: expected a pytest-benchmark JSON file: {err}") from err


def load_rows(path: Path) -> list[Row]:
    """The perf/ benchmarks of a pytest-benchmark JSON file (others are left out)."""
    return rows_from(_read(path), str(path))


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


def _limit(rows: Iterable[Row], workload: str, device: str) -> float | None:
    """GB/s of the fastest limit measured for ``workload`` on ``device``."""
    return _best(
        r for r in rows if r.kind == "limit" and (r.workload, r.device) == (workload, device)
    )


def score(rows: Sequence[Row]) -> list[Scored]:
    """Each row with its ratios to the best baseline and to the limit measured beside it."""
    out = []
    for row in rows:
        baseline = _best(
            r
            for r in rows
            if r.kind == "baseline"
            and (r.op, r.workload, r.device) == (row.op, row.workload, row.device)
        )
        limit = _limit(rows, row.workload, row.device)
        out.append(Scored(row, _over(row.gbps, baseline), _over(row.gbps, limit)))
    return out


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def format_table(scored: Sequence[Scored]) -> str:
    """The run as a text table: one line per benchmark, grouped by operation and workload."""
    ordered = sorted(
        scored,
        key=lambda s: (
            s.row.op,
            s.row.device,
            s.row.workload,
            _KIND_ORDER[s.row.kind],
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
    )
    return _table(header, lines)


@dataclass(frozen=True, slots=True)
class Change:
    """One benchmark present in both runs, and whether it regressed."""

    key: str
    kind: str
    ratio_before: float | None
    ratio_now: float | None
    median_before: float
    median_now: float
    ratio_regressed: bool
    raw_regressed: bool

    @property
    def gated_on_ratio(self) -> bool:
        """Whether both runs have a same-run reference ratio (else raw medians decide)."""
        return self.ratio_before is not None and self.ratio_now is not None

    @property
    def failed(self) -> bool:
        """A backend that regressed on the primary signal: its ratio, else its raw median.

        Baselines and limits are the yardsticks, not the code under watch: their
        changes are shown but never fail the comparison.
        """
        if self.kind != "backend":
            return False
        return self.ratio_regressed if self.gated_on_ratio else self.raw_regressed


def compare(
    baseline: Sequence[Scored], current: Sequence[Scored], threshold: float
) -> list[Change]:
    """The benchmarks of ``current`` that also ran in ``baseline``, in ``current``'s order.

    A ratio regressed when it fell below ``(1 - threshold)`` times its old value;
    a median regressed when it grew beyond ``(1 + threshold)`` times its old value.
    """
    before = {s.row.key: s for s in baseline}
    changes = []
    for now in current:
        old = before.get(now.row.key)
        if old is None:
            continue
        ratio_regressed = (
            old.ratio is not None
            and now.ratio is not None
            and now.ratio < old.ratio * (1 - threshold)
        )
        changes.append(
            Change(
                now.row.key,
                now.row.kind,
                old.ratio,
                now.ratio,
                old.row.median,
                now.row.median,
                ratio_regressed,
                now.row.median > old.row.median * (1 + threshold),
            )
        )
    return changes


def _pct(before: float | None, now: float | None) -> str:
    if before is None or now is None:
        return "-"
    return f"{before:.3g} -> {now:.3g} ({(now / before - 1) * 100:+.1f}%)"


def format_comparison(
    changes: Sequence[Change], baseline_keys: set[str], current_keys: set[str]
) -> str:
    """The comparison as text: every shared benchmark, then the ones only one run has."""

    def verdict(change: Change) -> str:
        if change.failed:
            return "REGRESSED" + ("" if change.gated_on_ratio else " (raw median)")
        if change.kind != "backend":
            return f"{change.kind}: " + ("slower" if change.raw_regressed else "ok")
        return "slower (raw median only)" if change.raw_regressed else "ok"

    lines = [
        (
            c.key,
            _pct(c.ratio_before, c.ratio_now),
            _pct(c.median_before * 1e3, c.median_now * 1e3),
            verdict(c),
        )
        for c in changes
    ]
    text = _table(("benchmark", "ratio to reference", "median ms", "verdict"), lines)
    for title, keys in (
        ("only in the baseline (not run now)", baseline_keys - current_keys),
        ("new (not in the baseline)", current_keys - baseline_keys),
    ):
        if keys:
            text += f"\n{title}:\n" + "\n".join(f"  {k}" for k in sorted(keys))
    return text


def _panel(ax: Axes, scored: Sequence[Scored], op: str, device: str) -> None:
    rows = [
        s.row
        for s in scored
        if (s.row.op, s.row.device) == (op, device) and s.row.kind != "limit" and s.row.nbytes
    ]
    workloads = sorted({r.workload for r in rows})
    # Backends first, then baselines, each alphabetically: colours stay put from run to run.
    subjects = sorted({(_KIND_ORDER[r.kind], r.subject) for r in rows})
    width = 0.8 / len(subjects)
    for k, (_, subject) in enumerate(subjects):
        rates = {r.workload: g for r in rows if r.subject == subject and (g := r.gbps) is not None}
        shift = (k - (len(subjects) - 1) / 2) * width
        xs = [i + shift for i, w in enumerate(workloads) if w in rates]
        ax.bar(xs, [rates[w] for w in workloads if w in rates], width, label=subject)
    label = "limit"
    for i, workload in enumerate(workloads):
        limit = _limit((s.row for s in scored), workload, device)
        if limit is not None:
            ax.hlines(limit, i - 0.45, i + 0.45, colors="black", linestyles="dashed", label=label)
            label = "_nolegend_"  # one legend entry for all the limit lines
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_ylabel("GB/s")
    ax.set_title(f"{op} ({device})")
    ax.legend(fontsize="small", ncols=2)


def write_chart(scored: Sequence[Scored], path: Path) -> None:
    """A PNG: a panel per operation, GB/s per workload and subject, the limit as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")  # no display: nightly machines and CI are headless
    import matplotlib.pyplot as plt

    panels = sorted(
        {
            (s.row.op, s.row.device)
            for s in scored
            if s.row.gbps is not None and s.row.kind != "limit"
        }
    )
    if not panels:
        raise ReportError(f"{path}: nothing to chart: no benchmark moves bytes")
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 3.6 * len(panels)), squeeze=False)
    for ax, (op, device) in zip(axes[:, 0], panels, strict=True):
        _panel(ax, scored, op, device)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_threshold(text: str) -> float:
    """``10%`` or ``0.1`` -> 0.1; a regression threshold must lie in (0, 1)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", text)
    value = (float(match[1]) / (100 if match[2] else 1)) if match else math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"threshold: expected e.g. 10% or 0.1 (between 0 and 1), got {text!r}"
        )
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (1: a regression, 2: unreadable input)."""
    parser = argparse.ArgumentParser(
        prog="python -m perf.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "results", type=Path, help="pytest-benchmark JSON (--benchmark-json) of a perf/ run"
    )
    parser.add_argument(
        "--compare", type=Path, metavar="BASELINE.json", help="fail on regressions against this run"
    )
    parser.add_argument(
        "--threshold",
        type=parse_threshold,
        default=0.10,
        help="allowed slowdown, e.g. 10%% (default)",
    )
    parser.add_argument("--chart", type=Path, help="PNG path (default: next to RESULTS, same name)")
    parser.add_argument("--no-chart", action="store_true", help="do not draw the PNG")
    args = parser.parse_args(argv)
    try:
        document = _read(args.results)
        current = score(rows_from(document, str(args.results)))
        print(describe_run(document, str(args.results)))
        print(format_table(current))
        if not args.no_chart:
            chart = args.chart or args.results.with_suffix(".png")
            write_chart(current, chart)
            print(f"\nchart: {chart}")
        if args.compare is None:
            return 0
        old_document = _read(args.compare)
        baseline = score(rows_from(old_document, str(args.compare)))
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    changes = compare(baseline, current, args.threshold)
    print(f"\ncompared with {describe_run(old_document, str(args.compare))}")
    print(f"threshold {args.threshold:.0%}:")
    print(format_comparison(changes, {s.row.key for s in baseline}, {s.row.key for s in current}))
    failed = [c.key for c in changes if c.failed]
    if failed:
        print(
            f"\n{len(failed)} benchmark(s) regressed beyond {args.threshold:.0%}", file=sys.stderr
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
