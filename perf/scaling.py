"""Multi-process scaling: aggregate throughput of N processes and its efficiency against one.

The ``mp-save`` / ``mp-load`` benchmarks (perf/test_multiprocess.py) time a save or a load of
one workload by N real processes together; their rows carry N (``procs``). Scaling
efficiency at N is ``GB/s at N / (N x GB/s at 1)``: 1.0 when N processes move the bytes N
times as fast as one, 1/N when they are no faster than one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from perf._rows import Row, markdown_table

__all__ = ["MP_OPS", "efficiency", "format_scaling"]

MP_OPS = ("mp-save", "mp-load")


def efficiency(at_n: float, at_one: float, procs: int) -> float:
    """``at_n / (procs * at_one)``: the share of ideal scaling that ``procs`` processes reach."""
    return at_n / (procs * at_one)


def format_scaling(rows: Iterable[Row]) -> str | None:
    """A table of the multi-process rows: per operation, device, workload and subject, the
    aggregate GB/s at each process count and its scaling efficiency; None without such rows."""
    chosen = [r for r in rows if r.op in MP_OPS and r.gbps is not None]
    if not chosen:
        return None
    counts = sorted({r.procs for r in chosen})
    by_line: dict[tuple[str, str, str, str], dict[int, float]] = {}
    for row in chosen:
        line = (row.op, row.device, row.workload, row.subject)
        by_line.setdefault(line, {})[row.procs] = row.gbps or 0.0
    lines = [
        (*line, *(_cell(rates, n) for n in counts))
        for line, rates in sorted(by_line.items(), key=lambda item: _order(item[0]))
    ]
    header = ("op", "device", "workload", "subject", *(f"{n} procs: GB/s (eff.)" for n in counts))
    return markdown_table(header, lines)


def _cell(rates: dict[int, float], procs: int) -> str:
    rate = rates.get(procs)
    if rate is None:
        return "-"
    one = rates.get(1)
    if one is None or procs == 1:
        return f"{rate:.2f}"
    return f"{rate:.2f} ({efficiency(rate, one, procs):.2f})"


def _order(line: Sequence[str]) -> tuple[int, str, str, str]:
    op, device, workload, subject = line
    return (MP_OPS.index(op), device, workload, subject)
