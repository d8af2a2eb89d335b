"""The suite's mutation score on dcp_impl's storage path (``nox -s mutation``; nightly).

mutmut (configured in pyproject.toml ``[tool.mutmut]``) makes the mutants and runs, for
each, the conformance suite's tests that reach the mutated function against
``dcp_impl-fs``. This script adds what mutmut lacks:

- ``run --sample N --seed S``: a uniformly random sample of the mutants instead of all of
  them, and ``--budget-s``: a hard wall-clock stop (the mutants not finished by then are
  reported as such, never counted);
- ``report``: the score per module and overall with a 95% (Wilson) interval, and the
  survivors by name (``mutmut show NAME`` prints one's diff) to triage.

Run from the repository root: ``python tools/mutation.py run --sample 120 --seed 21``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

__all__ = ["MUTATED", "main", "mutant_names", "results", "score_table", "wilson"]

#: The packages mutated (mirrors ``only_mutate`` in pyproject.toml; a test checks they agree).
MUTATED = ("dcp_impl/filesystem", "dcp_impl/transfer", "dcp_impl/store", "dcp_impl/metadata")
_MUTANTS = Path("mutants")
_REPORT = _MUTANTS / "mutation-report.json"
_ORDER = _MUTANTS / "mutation-order.json"
# mutmut's exit codes (mutmut.stats.status_by_exit_code), folded into what the score needs.
_KILLED = {1, 3, 36, -24, 24, 152, 255, 37}  # failed, timed out, or refused by the type check
_SURVIVED = {0}
_NO_TESTS = {5, 33}  # no test reaches the function: a survivor too
# mutmut's worker raised: pytest exited 4, the suite refusing to start on the mutant (its
# --dcp-backend would not load). CI would fail: a kill, shown apart.
_ERRORED = {-1}


def mutant_names() -> list[str]:
    """Every mutant mutmut made in the mutated packages (generating them if needed)."""
    if not any(_MUTANTS.glob("dcp_impl/**/*.meta")):
        _generate()
    return sorted(results())


def results() -> dict[str, int | None]:
    """Each mutant's recorded exit code (None: not run yet), from mutmut's .meta files."""
    out: dict[str, int | None] = {}
    for package in MUTATED:
        for meta in sorted((_MUTANTS / package).glob("*.py.meta")):
            out.update(json.loads(meta.read_text("utf-8"))["exit_code_by_key"])
    return out


def _generate() -> None:
    # mutmut generates only as the first step of `mutmut run`, which would go on to run the
    # whole suite twice (stats, clean run); its generation step alone is these calls.
    from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants

    _MUTANTS.mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    create_mutants(os.cpu_count() or 1)


def _status(code: int | None) -> str:
    if code is None:
        return "not run"
    if code in _KILLED:
        return "killed"
    if code in _SURVIVED:
        return "survived"
    if code in _NO_TESTS:
        return "no tests"
    if code in _ERRORED:
        return "errored"
    return "suspicious"  # crashed worker: counted as neither


def module_of(name: str) -> str:
    """``dcp_impl.transfer._read`` for ``dcp_impl.transfer._read.x_f__mutmut_3``."""
    return name.rsplit(".", 1)[0]


def wilson(killed: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a kill rate (sampling error only)."""
    if total == 0:
        return (0.0, 1.0)
    p = killed / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def score_table(codes: dict[str, int | None], equivalent: Sequence[str] = ()) -> str:
    """Markdown: per module, killed / survived / not run, the score and its interval.

    ``equivalent`` mutants (triaged by hand) count as neither killed nor survived.
    """
    by_module: dict[str, Counter[str]] = {}
    for name, code in codes.items():
        status = "equivalent" if name in equivalent else _status(code)
        by_module.setdefault(module_of(name), Counter())[status] += 1
    rows = ["| module | killed (errored) | survived | equivalent | not run | score (95% CI) |"]
    rows.append("|---|---|---|---|---|---|")
    total: Counter[str] = Counter()
    for module in sorted(by_module):
        rows.append(_row(module, by_module[module]))
        total.update(by_module[module])
    rows.append(_row("**all**", total))
    return "\n".join(rows)


def _row(label: str, c: Counter[str]) -> str:
    killed, survived = c["killed"] + c["errored"], c["survived"] + c["no tests"]
    judged = killed + survived
    low, high = wilson(killed, judged)
    score = f"{killed / judged:.0%} ({low:.0%}-{high:.0%})" if judged else "-"
    return (
        f"| {label} | {killed} ({c['errored']}) | {survived} | {c['equivalent']} | "
        f"{c['not run'] + c['suspicious']} | {score} |"
    )


# mutmut, with two of its steps replaced (pinned: constraints/mutation.txt):
# - the order: mutmut runs the mutants cheapest first, so a budget that ends the run early would
#   leave the dearest unjudged, a biased sample; here they run in the (seeded, shuffled) order
#   given, so the judged ones are a uniform random sample whenever the run stops;
# - its wiring check, which makes every mutated function raise and expects failing tests: the
#   suite's plugin calls some of them while loading --dcp-backend, so pytest exits with a usage
#   error, which mutmut takes for a bad command line. Its stats run already shows the wiring.
_MUTMUT = """
import json, sys
import mutmut.__main__ as mutmut
order = {name: i for i, name in enumerate(json.load(open(sys.argv.pop(1))))}
mutmut.estimated_worst_case_time = lambda name: order.get(name, len(order))
mutmut.run_forced_fail_test = lambda runner: None
sys.argv[0] = "mutmut"
sys.exit(mutmut.cli())
"""


def _run(args: argparse.Namespace) -> int:
    names = mutant_names()
    order = list(names)
    random.Random(args.seed).shuffle(order)
    chosen = order if args.sample is None else order[: args.sample]
    print(f"{len(chosen)} of {len(names)} mutants (seed {args.seed}), budget {args.budget_s} s")
    _ORDER.write_text(json.dumps(chosen), "utf-8")
    _REPORT.write_text(json.dumps({"seed": args.seed, "sample": sorted(chosen)}), "utf-8")
    selected = [] if args.sample is None else chosen  # no names: every mutant not yet judged
    command = [sys.executable, "-c", _MUTMUT, str(_ORDER), "run"]
    command += [f"--max-children={args.max_children}", *selected]
    # its own session: at the budget's end the whole tree (forked workers) is stopped
    process = subprocess.Popen(command, start_new_session=True)
    try:
        process.wait(timeout=args.budget_s)
    except subprocess.TimeoutExpired:
        print(f"budget of {args.budget_s} s spent: stopping mutmut", file=sys.stderr)
        os.killpg(process.pid, signal.SIGTERM)
        time.sleep(10)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return _report(args)


def _report(args: argparse.Namespace) -> int:
    codes = results()
    if _REPORT.exists():
        sample = set(json.loads(_REPORT.read_text("utf-8"))["sample"])
        codes = {k: v for k, v in codes.items() if k in sample}
    print(score_table(codes, args.equivalent))
    for name in sorted(k for k, v in codes.items() if _status(v) in ("survived", "no tests")):
        print(f"survived: {name}" + (" (equivalent)" if name in args.equivalent else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``run`` (sample, budget) or ``report``."""
    parser = argparse.ArgumentParser(prog="tools/mutation.py", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run mutmut on all mutants or a sample, then report")
    run.add_argument("--sample", type=int, default=None, help="mutants drawn (default: all)")
    run.add_argument("--seed", type=int, default=0, help="the sample's random seed")
    run.add_argument("--budget-s", type=float, default=None, help="hard wall-clock stop")
    run.add_argument("--max-children", type=int, default=2, help="mutants run at once")
    report = commands.add_parser("report", help="score the recorded results")
    for sub in (run, report):
        sub.add_argument("--equivalent", nargs="*", default=[], help="triaged as equivalent")
    args = parser.parse_args(argv)
    return _run(args) if args.command == "run" else _report(args)


if __name__ == "__main__":
    sys.exit(main())
