"""``python -m spec_tests matrix``: run the conformance suite once per backend and tabulate it.

Usage::

    python -m spec_tests matrix [--backend SPEC ...] [--out DIR] [--profile dcp-ci] [-- PYTEST ARGS]
    python -m spec_tests selftest [--backend NAME ...] [--out DIR] [--jobs 2] [-- PYTEST ARGS]
    python -m spec_tests probe --backend SPEC

Each backend runs in its own ``python -m pytest --pyargs spec_tests`` subprocess (a backend
that crashes or cannot be imported becomes a column of errors, not a crash of the command).
Writes ``matrix.md``, ``matrix.json``, the per-backend result files and pytest logs into
``--out``, prints the Markdown, and exits 0 only if no backend has a failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from spec_tests.backends import (
    BUILTIN_NAMES,
    OPT_IN,
    BackendSpecError,
    configurations,
    load_backend,
)
from spec_tests.cli.runs import Progress, run_backend
from spec_tests.plugin.results import (
    BackendResult,
    aggregate,
    counts_line,
    render_markdown,
    to_json,
    verdict,
)

# Every built-in but the opt-in ones, the reference first (it is the yardstick the others are
# read against).
DEFAULT_BACKENDS = (
    "reference",
    *(name for name in BUILTIN_NAMES if name != "reference" and name not in OPT_IN),
)


def columns(specs: Sequence[str]) -> list[str]:
    """The specs the matrix runs, one per column: a backend with named configurations becomes
    ``SPEC[CONFIG]`` for each of them.

    A built-in name is one configuration already (its family's others are built-ins of their
    own), and ``SPEC[CONFIG]`` picks one; a SPEC that does not resolve is kept, for its run to
    report why.
    """
    out: list[str] = []
    for spec in specs:
        if spec in BUILTIN_NAMES or spec.endswith("]"):
            out.append(spec)
            continue
        try:
            named = configurations(load_backend(spec), spec=spec)
        except BackendSpecError:
            named = {}
        out.extend([f"{spec}[{config}]" for config in named] or [spec])
    return list(dict.fromkeys(out))


def _summary(result: BackendResult) -> str:
    took = f" in {result.seconds:.0f} s" if result.seconds is not None else ""
    return f"{result.backend}: {verdict(result)} ({counts_line(result)}){took}"


def matrix_command(args: argparse.Namespace, extra: list[str]) -> int:
    """Run every backend, write matrix.md / matrix.json into --out, print the Markdown."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    suite = ["--pyargs", "spec_tests"] if args.suite is None else [args.suite]
    specs = columns(args.backend or DEFAULT_BACKENDS)
    progress = Progress(len(specs))

    def one(numbered: tuple[int, str]) -> BackendResult:
        n, spec = numbered
        progress.say(n, f"start {spec} (log: {out / 'logs'})")
        result = run_backend(
            spec,
            out,
            suite=suite,
            profile=args.profile,
            extra=extra,
            heartbeat=lambda seconds: progress.say(n, f"{spec} still running ({seconds:.0f} s)"),
        )
        progress.say(n, "done " + _summary(result))
        return result

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(one, enumerate(specs, 1)))
    matrix = aggregate(results)
    markdown = render_markdown(matrix)
    (out / "matrix.md").write_text(markdown, encoding="utf-8")
    (out / "matrix.json").write_text(json.dumps(to_json(matrix), indent=1), encoding="utf-8")
    print(markdown, flush=True)
    print(f"written: {out / 'matrix.md'}, {out / 'matrix.json'}", file=sys.stderr)
    return 1 if matrix.failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spec_tests", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    matrix = commands.add_parser(
        "matrix",
        help="run the suite on each backend and print the conformance matrix",
        description="Run the conformance suite on each backend; arguments after -- go to pytest.",
    )
    matrix.add_argument(
        "--backend",
        action="append",
        metavar="SPEC",
        help="built-in name or module:attr, each of its named configurations a column "
        f"(SPEC[CONFIG] for one); repeatable (default: {', '.join(DEFAULT_BACKENDS)})",
    )
    matrix.add_argument(
        "--out",
        type=Path,
        default=Path("conformance-results"),
        help="directory for matrix.md, matrix.json, results/ and logs/ (default: %(default)s)",
    )
    matrix.add_argument(
        "--profile",
        default=None,
        help="hypothesis profile: dcp-dev (the suite's default), dcp-ci or dcp-nightly",
    )
    matrix.add_argument(
        "--suite",
        default=None,
        metavar="PATH",
        help="run this test path instead of the installed spec_tests package",
    )
    matrix.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="backends tested at a time, each in its own process (default: %(default)s)",
    )
    selftest = commands.add_parser(
        "selftest",
        help="run the suite on every deliberately broken backend; all must be killed",
        description="Run the suite (-x, dcp-selftest profile) on each broken backend of "
        "spec_tests.selftest and on the faithful wrappers; arguments after -- go to pytest.",
    )
    selftest.add_argument(
        "--backend",
        action="append",
        metavar="NAME",
        help="only these catalogue entries (class names); repeatable (default: all)",
    )
    selftest.add_argument(
        "--out",
        type=Path,
        default=Path("selftest-results"),
        help="directory for selftest.json, results/ and logs/ (default: %(default)s)",
    )
    selftest.add_argument(
        "--jobs", type=int, default=2, help="suite runs at a time (default: %(default)s)"
    )
    probe = commands.add_parser(
        "probe",
        help="try each capability once on a backend and print the claims that hold",
        description="Try every capability of the vocabulary once on small examples and print "
        "the ones that hold, as a capabilities= line.",
    )
    probe.add_argument("--backend", required=True, metavar="SPEC", help="built-in or module:attr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    args = _parser().parse_args(argv)
    if args.command == "selftest":
        from spec_tests.cli.selftest import selftest_command

        return selftest_command(args.backend, args.out, jobs=args.jobs, extra=extra)
    if args.command == "probe":
        from spec_tests.cli.probe import probe_command

        return probe_command(args.backend)
    return matrix_command(args, extra)


if __name__ == "__main__":
    sys.exit(main())
