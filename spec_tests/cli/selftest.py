"""``python -m spec_tests selftest``: the suite against every broken and faithful backend.

Each backend gets its own pytest subprocess (:func:`spec_tests.cli.runs.run_backend`, as the
matrix does) under the ``dcp-selftest`` profile (dcp-ci's derandomized examples without
shrinking: the same draws, so the same verdict) with ``-x``. A broken backend is *killed*
when a test fails on it; a faithful wrapper must pass. The family a backend is expected
to fall to runs first (a kill then comes early), the cheap modules next and the
multi-process ones last; the longest runs start first so that the two workers finish
together.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import spec_tests
from spec_tests.cli.runs import Progress, run_backend
from spec_tests.plugin.results import BackendResult
from spec_tests.selftest.catalogue import BROKEN, FAITHFUL
from spec_tests.selftest.wrap import Wrapped

__all__ = [
    "Entry",
    "Verdict",
    "discount_shared",
    "entries_of",
    "judge",
    "render",
    "run",
    "selftest_command",
    "suite_order",
]

#: Suite modules (``spec_tests/test_<family>.py``) from cheapest to dearest; any other runs
#: before the last one.
_CHEAP_FIRST = ("contract", "roundtrip", "metadata", "resharding", "faults", "multiprocess")
_FAILING = frozenset({"fail", "xpass"})


@dataclass(frozen=True, slots=True)
class Entry:
    """One backend the self-test runs: its SPEC, whether it must pass, the family to run first."""

    name: str
    spec: str
    faithful: bool
    family: str = ""
    slow: bool = False  # started first: its run is expected to take longest
    base: str = ""  # the backend it wraps: a faithful wrapper's failures are the base's


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the suite did to one entry."""

    entry: Entry
    outcome: str  # killed / survived (broken), passed / failed (faithful), or error
    test: str = ""  # the first failing test's node id
    reason: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether this entry came out as the self-test requires."""
        return self.outcome in ("killed", "passed")


def entries_of(backends: Sequence[type[Wrapped]], *, faithful: bool) -> list[Entry]:
    """Entries for catalogue classes (their SPEC is ``module:ClassName``)."""
    return [
        Entry(
            name=b.__qualname__,
            spec=f"{b.__module__}:{b.__qualname__}",
            faithful=faithful,
            family=b.family,
            # a whole run of dcp_impl-fs: the killed-save and multi-process properties
            slow=faithful and b.base == "dcp_impl-fs",
            base=b.base,
        )
        for b in backends
    ]


def suite_order(family: str, available: Sequence[str] | None = None) -> list[str]:
    """The suite's modules as ``--pyargs`` targets: ``family`` first, then cheapest first."""
    stems = list(available if available is not None else _suite_stems())
    rank = {stem: n for n, stem in enumerate(_CHEAP_FIRST[:-1])}
    last = _CHEAP_FIRST[-1]
    ordered = sorted(stems, key=lambda s: (s != family, s == last, rank.get(s, len(rank)), s))
    return [f"spec_tests.test_{stem}" for stem in ordered]


def _suite_stems() -> list[str]:
    package = Path(spec_tests.__file__).parent
    return sorted(p.stem.removeprefix("test_") for p in package.glob("test_*.py"))


def judge(entry: Entry, result: BackendResult, seconds: float) -> Verdict:
    """The verdict on one entry from its suite run."""
    failing = [t for t in result.tests if t.outcome in _FAILING]
    first = failing[0] if failing else None
    if result.error is not None or any(t.outcome == "error" for t in result.tests):
        errors = [t.reason for t in result.tests if t.outcome == "error"]
        return Verdict(entry, "error", reason=result.error or errors[0], seconds=seconds)
    if entry.faithful:
        if first is not None or result.exitstatus != 0:
            test, reason = (first.nodeid, first.reason) if first else ("", "pytest failed")
            return Verdict(entry, "failed", test, reason, seconds)
        return Verdict(entry, "passed", seconds=seconds)
    if first is not None:
        return Verdict(entry, "killed", first.nodeid, first.reason, seconds)
    if result.exitstatus != 0:
        return Verdict(entry, "error", reason=f"pytest exit status {result.exitstatus}")
    return Verdict(entry, "survived", seconds=seconds)


def discount_shared(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Kills by a test that the faithful wrapper of the same base fails too become errors.

    Such a failure is the base's (or the suite's), not the planted bug's: it proves nothing.
    """
    failed = {(v.entry.base, v.test) for v in verdicts if v.entry.faithful and v.test}
    return [
        dataclasses.replace(
            v,
            outcome="error",
            reason=f"killed by {v.test}, which the faithful {v.entry.base} wrapper fails too",
        )
        if v.outcome == "killed" and (v.entry.base, v.test) in failed
        else v
        for v in verdicts
    ]


def run(
    entries: Sequence[Entry],
    out: Path,
    *,
    jobs: int = 2,
    profile: str = "dcp-selftest",
    suite: str | None = None,
    extra: Sequence[str] = (),
) -> list[Verdict]:
    """Run the suite on every entry, ``jobs`` at a time; verdicts in the entries' order.

    ``suite`` replaces the installed suite by one test path (no module ordering then).
    """
    out.mkdir(parents=True, exist_ok=True)

    order = sorted(entries, key=lambda e: not e.slow)  # stable: catalogue order otherwise
    progress = Progress(len(order))

    def one(numbered: tuple[int, Entry]) -> Verdict:
        n, entry = numbered
        targets = [suite] if suite is not None else ["--pyargs", *suite_order(entry.family)]
        progress.say(n, f"start {entry.name}")
        start = time.monotonic()
        result = run_backend(
            entry.spec,
            out,
            suite=targets,
            profile=profile,
            extra=["-x", *extra],
            heartbeat=lambda s: progress.say(n, f"{entry.name} still running ({s:.0f} s)"),
        )
        verdict = judge(entry, result, time.monotonic() - start)
        progress.say(n, f"{verdict.outcome.upper()} {entry.name} ({verdict.seconds:.0f} s)")
        return verdict

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = dict(zip(order, pool.map(one, enumerate(order, 1)), strict=True))
    verdicts = discount_shared([done[e] for e in entries])
    summary = {"ok": all(v.ok for v in verdicts), "verdicts": [asdict(v) for v in verdicts]}
    (out / "selftest.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return verdicts


def render(verdicts: Sequence[Verdict]) -> str:
    """The sensitivity line, the faithful line, then one line per entry."""
    broken = [v for v in verdicts if not v.entry.faithful]
    faithful = [v for v in verdicts if v.entry.faithful]
    killed = [v for v in broken if v.outcome == "killed"]
    survivors = [v.entry.name for v in broken if v.outcome == "survived"]
    unjudged = [v.entry.name for v in broken if v.outcome == "error"]
    lines = [
        f"sensitivity: {len(killed)} of {len(broken)} broken backends killed"
        + (f"; survivors: {', '.join(survivors)}" if survivors else "")
        + (f"; not judged (errors): {', '.join(unjudged)}" if unjudged else ""),
        f"faithful wrappers: {sum(v.ok for v in faithful)} of {len(faithful)} pass",
        "",
    ]
    for v in verdicts:
        where = f" by {v.test}" if v.test else ""
        if v.outcome == "killed" and not v.test.startswith(f"test_{v.entry.family}.py"):
            where += " (outside its family: look at the reason in its log)"
        why = f": {v.reason}" if v.reason and v.outcome != "killed" else ""
        family = f" [family {v.entry.family}]" if v.entry.family else ""
        lines.append(
            f"{v.outcome.upper():9} {v.entry.name}{family}{where}{why} ({v.seconds:.0f} s)"
        )
    return "\n".join(lines)


def selftest_command(
    names: Sequence[str] | None, out: Path, *, jobs: int, extra: Sequence[str]
) -> int:
    """Run the self-test (the catalogue, or the entries called ``names``); print the verdicts."""
    entries = entries_of(BROKEN, faithful=False) + entries_of(FAITHFUL, faithful=True)
    if names:
        unknown = sorted(set(names) - {e.name for e in entries})
        if unknown:
            print(f"selftest: no catalogue entry named {', '.join(unknown)}", file=sys.stderr)
            return 2
        entries = [e for e in entries if e.name in names]
    print(f"selftest: {len(entries)} suite runs, {jobs} at a time ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    verdicts = run(entries, out, jobs=jobs, extra=extra)
    print(render(verdicts))
    print(
        f"selftest: {time.monotonic() - start:.0f} s; logs in {out / 'logs'}",
        file=sys.stderr,
    )
    return 0 if all(v.ok for v in verdicts) else 1
