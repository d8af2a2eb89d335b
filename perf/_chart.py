"""The chart of a perf/ run: throughput beside its same-run reference, a panel per operation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from perf._rows import KIND_ORDER, ReportError, Scored, limit_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["write_chart"]


def _panel(ax: Axes, scored: Sequence[Scored], op: str, device: str) -> None:
    rows = [
        s.row
        for s in scored
        if (s.row.op, s.row.device) == (op, device) and s.row.kind != "limit" and s.row.nbytes
    ]
    workloads = sorted({r.workload for r in rows})
    # Backends first, then baselines, each alphabetically: colours stay put from run to run.
    subjects = sorted({(KIND_ORDER[r.kind], r.subject) for r in rows})
    width = 0.8 / len(subjects)
    for k, (_, subject) in enumerate(subjects):
        rates = {r.workload: g for r in rows if r.subject == subject and (g := r.gbps) is not None}
        shift = (k - (len(subjects) - 1) / 2) * width
        xs = [i + shift for i, w in enumerate(workloads) if w in rates]
        ax.bar(xs, [rates[w] for w in workloads if w in rates], width, label=subject)
    label = "limit"
    for i, workload in enumerate(workloads):
        limit = limit_of((s.row for s in scored), workload, device)
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
