"""``summary.md``: what regressed since the previous night, then what this night found.

A regression is a backend whose verdict changed, a property cell that got worse (it passed,
refused loudly or failed as listed, and now fails, errors or passes against its entry; or it
held and is now a listed failure), an unexpected failure that the previous night did not
have, or a benchmark the perf gate calls regressed between the two nights' runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nightly.stages import StageResult
from perf.report import DEFAULT_THRESHOLD, compare, load_rows, score
from spec_tests.plugin.results import FAILING

__all__ = ["Regressions", "regressions", "render_summary"]

_HELD = frozenset({"pass", "refuses"})


@dataclass(frozen=True, slots=True)
class Regressions:
    """Each kind of regression since the previous night, one line per finding."""

    verdicts: tuple[str, ...] = ()
    properties: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    perf: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()  # the other way round: shown, never a regression

    @property
    def found(self) -> bool:
        """Whether anything regressed (``fixed`` does not count)."""
        return bool(self.verdicts or self.properties or self.failures or self.perf)


def _matrix(folder: Path) -> dict[str, Any] | None:
    path = folder / "matrix.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _worse(before: str, now: str) -> bool:
    return (now in FAILING and before not in FAILING) or (before in _HELD and now == "xfail")


def _cells(matrix: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (prop, backend): cell["outcome"]
        for prop, row in matrix["properties"].items()
        for backend, cell in row.items()
    }


def _problems(matrix: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (b["backend"], p["nodeid"]): f"{p['outcome']}: {p['reason']}"
        for b in matrix["backends"]
        for p in b["problems"]
    }


def _standing(backend: dict[str, Any]) -> tuple[bool, int]:
    """Orders a backend's verdicts: passing the gate first, then fewer listed bugs."""
    return (not backend["failed"], -backend["totals"]["xfail"])


def _matrix_changes(before: dict[str, Any], now: dict[str, Any]) -> Regressions:
    old = {b["backend"]: b for b in before["backends"]}
    verdicts: list[str] = []
    better: list[str] = []
    for b in now["backends"]:
        was = old.get(b["backend"])
        if was is None or was["verdict"] == b["verdict"]:
            continue
        line = f"**{b['backend']}**: {was['verdict']} → {b['verdict']}"
        (verdicts if _standing(b) < _standing(was) else better).append(line)
    old_cells, new_cells = _cells(before), _cells(now)
    shared = sorted(old_cells.keys() & new_cells.keys())
    worse, fixed = [], better
    for prop, backend in shared:
        was, got = old_cells[prop, backend], new_cells[prop, backend]
        line = f"`{prop}` on **{backend}**: {was} → {got}"
        if _worse(was, got):
            worse.append(line)
        elif _worse(got, was):
            fixed.append(line)
    old_problems, problems = _problems(before), _problems(now)
    failures = tuple(
        f"**{backend}** `{nodeid}` {why}"
        for (backend, nodeid), why in problems.items()
        if (backend, nodeid) not in old_problems
    )
    return Regressions(tuple(verdicts), tuple(worse), failures, fixed=tuple(fixed))


def _perf_changes(before: Path, now: Path) -> tuple[str, ...]:
    old, new = (score(load_rows(p)) for p in (before, now))
    return tuple(
        f"`{c.key}`: "
        + (
            f"ratio to its reference {c.ratio_before:.3g} → {c.ratio_now:.3g}"
            if c.gated_on_ratio
            else f"median {c.median_before * 1e3:.3g} ms → {c.median_now * 1e3:.3g} ms"
        )
        for c in compare(old, new, DEFAULT_THRESHOLD)
        if c.failed
    )


def regressions(current: Path, previous: Path) -> Regressions:
    """What got worse from the results folder ``previous`` to ``current``."""
    before, now = _matrix(previous), _matrix(current)
    found = Regressions()
    if before is not None and now is not None:
        found = _matrix_changes(before, now)
    runs = previous / "perf.json", current / "perf.json"
    if all(p.is_file() for p in runs):
        return Regressions(
            found.verdicts, found.properties, found.failures, _perf_changes(*runs), found.fixed
        )
    return found


_SECTIONS = (
    ("verdicts", "Verdicts changed"),
    ("properties", "Properties that got worse"),
    ("failures", "New unexpected failures"),
    ("perf", f"Benchmarks slower than the previous night's (beyond {DEFAULT_THRESHOLD:.0%})"),
)


def _since(previous: Path | None, found: Regressions | None) -> list[str]:
    if previous is None or found is None:
        return ["No previous results were given (`--previous DIR`): nothing to compare with.", ""]
    if not found.found:
        lines = [f"**Nothing regressed since `{previous}`.**", ""]
    else:
        lines = [f"**Regressed since `{previous}`:**", ""]
        for name, title in _SECTIONS:
            items = getattr(found, name)
            if items:
                lines += [f"### {title}", "", *(f"- {item}" for item in items), ""]
    if found.fixed:
        lines += ["### Better than the previous night", "", *(f"- {f}" for f in found.fixed), ""]
    return lines


def _stage_table(stages: list[StageResult]) -> list[str]:
    if not stages:
        return ["No stage has run into this folder."]
    lines = ["| stage | status | time | detail |", "| --- | --- | --- | --- |"]
    for s in stages:
        status = s.status if s.status == "passed" else f"**{s.status}**"
        lines.append(f"| {s.stage} | {status} | {s.seconds:.0f} s | {s.detail} |")
    return lines


def _verdict_table(matrix: dict[str, Any] | None) -> list[str]:
    if matrix is None:
        return ["No matrix this night."]
    lines = ["| backend | verdict | run time |", "| --- | --- | --- |"]
    for b in matrix["backends"]:
        verdict = f"**{b['verdict']}**" if b["failed"] else b["verdict"]
        took = "-" if b["seconds"] is None else f"{b['seconds']:.0f} s"
        lines.append(f"| {b['backend']} | {verdict} | {took} |")
    return [*lines, "", "Every property on every backend: [matrix.md](matrix.md)."]


_PERF_FILES = (
    "Perf: [perf.json](perf.json), its chart [perf.png](perf.png) and the gate against the "
    "stored baseline [perf-gate.txt](perf-gate.txt)."
)


def render_summary(
    out: Path, previous: Path | None, stages: list[StageResult], found: Regressions | None
) -> str:
    """The summary: regressions since ``previous`` first, then the stages and the verdicts."""
    failed = [s for s in stages if s.status == "failed"]
    lines = [f"# Nightly results: `{out}`", "", "## Since the previous night", ""]
    lines += _since(previous, found)
    lines += ["## This night", ""]
    if failed:
        lines += [f"**Failed: {', '.join(s.stage for s in failed)}.**", ""]
    lines += _stage_table(stages)
    lines += ["", "## Backends", "", *_verdict_table(_matrix(out))]
    if (out / "perf-gate.txt").is_file():
        lines += ["", _PERF_FILES]
    return "\n".join(lines) + "\n"
