"""``python -m spec_tests matrix``: run the conformance suite once per backend and tabulate it.

Usage::

    python -m spec_tests matrix [--backend SPEC ...] [--out DIR] [--profile dcp-ci] [-- PYTEST ARGS]

Each backend runs in its own ``python -m pytest --pyargs spec_tests`` subprocess (a backend
that crashes or cannot be imported becomes a column of errors, not a crash of the command).
Writes ``matrix.md``, ``matrix.json``, the per-backend result files and pytest logs into
``--out``, prints the Markdown, and exits 0 only if no backend has a failure.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from spec_tests.matrix import (
    BackendResult,
    aggregate,
    failed_run,
    load_result,
    render_markdown,
    to_json,
)

DEFAULT_BACKENDS = (
    "reference",
    "dcp_impl-fs",
    "dcp_impl-hf",
    "torch-fs",
    "torch-hf",
    "torch-fsspec",
)


def run_backend(
    spec: str, out: Path, *, suite: Sequence[str], profile: str | None, extra: Sequence[str]
) -> BackendResult:
    """Run the suite on one backend in a subprocess and read back its result file."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)
    report, log = out / "results" / f"{slug}.json", out / "logs" / f"{slug}.log"
    report.unlink(missing_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pytest",
        *suite,
        f"--dcp-backend={spec}",
        f"--dcp-report={report}",
        "-p",
        "no:cacheprovider",
        *(["--hypothesis-profile", profile] if profile else []),
        *extra,
    ]
    with log.open("w", encoding="utf-8") as sink:
        sink.write(" ".join(command) + "\n\n")
        sink.flush()
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, check=False)
    if not report.is_file():
        return failed_run(spec, f"{_why(log)} (pytest exit status {done.returncode})")
    return load_result(report)


def _why(log: Path) -> str:
    """The reason a run left no result file: pytest's ERROR lines, else the log's last lines."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[1:]  # skip the command
    lines = [line.strip() for line in lines if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    return " / ".join(errors or lines[-3:]) or "no output"


def _summary(result: BackendResult, seconds: float) -> str:
    totals = ", ".join(f"{n} {o}" for o, n in result.totals.items() if n)
    verdict = "FAIL" if result.failed else "ok"
    return f"{result.backend}: {verdict} ({totals or 'nothing ran'}) in {seconds:.0f} s"


def matrix_command(args: argparse.Namespace, extra: list[str]) -> int:
    """Run every backend, write matrix.md / matrix.json into --out, print the Markdown."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    suite = ["--pyargs", "spec_tests"] if args.suite is None else [args.suite]
    results = []
    for spec in args.backend or DEFAULT_BACKENDS:
        print(f"running the suite on {spec} ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        result = run_backend(spec, out, suite=suite, profile=args.profile, extra=extra)
        print("  " + _summary(result, time.monotonic() - start), file=sys.stderr, flush=True)
        results.append(result)
    matrix = aggregate(results)
    markdown = render_markdown(matrix)
    (out / "matrix.md").write_text(markdown, encoding="utf-8")
    (out / "matrix.json").write_text(json.dumps(to_json(matrix), indent=1), encoding="utf-8")
    print(markdown)
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
        help=f"built-in name or module:attr; repeatable (default: {', '.join(DEFAULT_BACKENDS)})",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    args = _parser().parse_args(argv)
    return matrix_command(args, extra)


if __name__ == "__main__":
    sys.exit(main())
