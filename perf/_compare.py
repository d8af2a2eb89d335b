"""Comparing a perf/ run with a stored one: which benchmarks regressed, and a table of changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from perf._rows import Scored, markdown_table

__all__ = ["Change", "compare", "format_comparison"]


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
    text = markdown_table(("benchmark", "ratio to reference", "median ms", "verdict"), lines)
    for title, keys in (
        ("only in the baseline (not run now)", baseline_keys - current_keys),
        ("new (not in the baseline)", current_keys - baseline_keys),
    ):
        if keys:
            text += f"\n{title}:\n" + "\n".join(f"  {k}" for k in sorted(keys))
    return text
