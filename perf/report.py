"""Read a pytest-benchmark JSON of perf/: print the table, draw the chart, gate on regressions.

Usage::

    python -m perf.report RUN.json                      # table + RUN.png
    python -m perf.report RUN.json --compare perf/baselines/NAME.json [--threshold 10%]
    python -m perf.report RUN1.json RUN2.json RUN3.json --versus torch-hf \\
        --versus '{subject}-noverify'          # medians of three runs, two more ratios

Each benchmark row carries labels in ``extra_info`` (see perf/bench.py): the
operation, workload, subject (backend / baseline / limit name), its kind, the
bytes moved per round and the device. Throughput is compared as a RATIO to a
reference measured in the same run (a backend against the best baseline of its
operation and workload, a baseline against the hardware limit), because a
ratio survives a noisy or slower machine and a raw time does not. Raw medians
are the secondary signal, and the only one for rows without a reference.

Several runs of the same benchmarks (on a noisy machine, measure three times) are
reported as one: each time is the median of the runs' medians and each ratio the
median of the ratios taken within each run. ``--versus SUBJECT`` adds a ratio column
against another subject of the same run (``{subject}`` in it stands for the row's own).

Multi-process rows (``mp-save`` / ``mp-load``, perf/test_multiprocess.py) also carry
the process count that moved the bytes together; the report prints them once more as
a scaling table: aggregate GB/s per backend and process count, and the scaling
efficiency ``GB/s at N / (N x GB/s at 1)``. They have no same-run reference, so the
gate compares their raw medians.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from perf._chart import write_chart
from perf._compare import Change, compare, format_comparison
from perf._rows import (
    KINDS,
    ReportError,
    Row,
    Scored,
    describe_run,
    format_table,
    load_rows,
    median_of_runs,
    read_document,
    rows_from,
    score,
)
from perf.scaling import efficiency, format_scaling

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
    "median_of_runs",
    "format_table",
    "compare",
    "format_comparison",
    "write_chart",
    "efficiency",
    "format_scaling",
    "DEFAULT_THRESHOLD",
    "parse_threshold",
    "main",
]


#: The gate's allowed slowdown: a ratio more than 10% below the baseline's is a regression.
DEFAULT_THRESHOLD = 0.10


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
        "results",
        type=Path,
        nargs="+",
        help="pytest-benchmark JSON (--benchmark-json) of a perf/ run; several runs are "
        "reported as one, each figure the median of the runs'",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        metavar="BASELINE.json",
        help="fail on regressions against this run (several: their medians)",
    )
    parser.add_argument(
        "--threshold",
        type=parse_threshold,
        default=DEFAULT_THRESHOLD,
        help="allowed slowdown, e.g. 10%% (default)",
    )
    parser.add_argument(
        "--versus",
        action="append",
        default=[],
        metavar="SUBJECT",
        help="one more ratio column: GB/s over SUBJECT's in the same run; {subject} stands "
        "for the row's own subject (e.g. '{subject}-noverify')",
    )
    parser.add_argument(
        "--chart", type=Path, help="PNG path (default: next to the first RESULTS, same name)"
    )
    parser.add_argument("--no-chart", action="store_true", help="do not draw the PNG")
    args = parser.parse_args(argv)
    try:
        current = _scored(args.results, args.versus)
        print(format_table(current, args.versus))
        scaling = format_scaling(s.row for s in current)
        if scaling is not None:
            print("\nmulti-process scaling: aggregate GB/s, (eff.) = GB/s / (procs x GB/s at 1)")
            print(scaling)
        if not args.no_chart:
            chart = args.chart or args.results[0].with_suffix(".png")
            write_chart(current, chart)
            print(f"\nchart: {chart}")
        if args.compare is None:
            return 0
        print("\ncompared with")
        baseline = _scored(args.compare)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    changes = compare(baseline, current, args.threshold)
    print(f"threshold {args.threshold:.0%}:")
    print(format_comparison(changes, {s.row.key for s in baseline}, {s.row.key for s in current}))
    failed = [c.key for c in changes if c.failed]
    if failed:
        print(
            f"\n{len(failed)} benchmark(s) regressed beyond {args.threshold:.0%}", file=sys.stderr
        )
    return 1 if failed else 0


def _scored(paths: Sequence[Path], versus: Sequence[str] = ()) -> list[Scored]:
    """The runs at ``paths``, each described in one line, scored as one."""
    runs = []
    for path in paths:
        document = read_document(path)
        runs.append(score(rows_from(document, str(path)), versus))
        print(describe_run(document, str(path)))
    if len(runs) > 1:
        print(f"(medians of {len(runs)} runs)")
    return median_of_runs(runs)


if __name__ == "__main__":
    sys.exit(main())
