"""The suite's self-test: deliberately broken backends the conformance suite must reject.

Modelled on array-api-tests' meta-tests. :data:`BROKEN` holds backends that each plant one
realistic bug in ``reference`` or ``dcp_impl-fs`` (modules :mod:`.writers`,
:mod:`.readers`, :mod:`.protocol`); :data:`FAITHFUL` holds the same bases passed through
the same wrapping machinery unchanged. ``python -m spec_tests selftest`` runs the suite on
each (:mod:`.runner`) and exits 0 only if every broken backend is killed and every
faithful wrapper passes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from spec_tests.selftest.catalogue import BROKEN, FAITHFUL, spec_of
from spec_tests.selftest.runner import Entry, Verdict, entries_of, render, run

__all__ = [
    "BROKEN",
    "FAITHFUL",
    "Entry",
    "Verdict",
    "entries_of",
    "render",
    "run",
    "selftest_command",
    "spec_of",
]


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
