"""``python -m nightly``: run the nightly's stages into one results folder, then summarize.

Usage (from the repository root; ``nox -s nightly`` installs what it needs and runs this)::

    python -m nightly [--out DIR] [--previous DIR] [--stages matrix,perf] [--jobs N]
                      [--backend SPEC ...] [--matrix-args ARGS] [--perf-args ARGS]
                      [--perf-baseline PATH] [--mutation-args ARGS]

Stages run in the order of :data:`nightly.STAGES`; ``--stages`` picks some (``none``: only
rewrite the summary), so a part can be rerun into the same folder, whose ``nightly.json``
keeps every stage's last result. Exits 1 when a stage failed or something regressed since
``--previous``, else 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from nightly._stages import MUTATION_ARGS, PERF_BASELINE, STAGES, Options, StageResult
from nightly._summary import regressions, render_summary


def _stages(text: str) -> tuple[str, ...]:
    if text == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"stages: expected 'none' or a comma-separated list of {', '.join(STAGES)}, "
            f"got {text!r}"
        )
    return names


def _previous(text: str) -> Path:
    path = Path(text)
    if not any((path / name).is_file() for name in ("matrix.json", "perf.json")):
        raise argparse.ArgumentTypeError(
            f"previous: expected a nightly results folder (with matrix.json or perf.json), "
            f"got {text!r}"
        )
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nightly", description=__doc__.split("\n")[0])
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    parser.add_argument(
        "--out", type=Path, default=Path("nightly-results") / stamp, help="default: %(default)s"
    )
    parser.add_argument("--previous", type=_previous, help="an earlier night's results folder")
    parser.add_argument(
        "--stages",
        type=_stages,
        default=tuple(STAGES),
        help=f"comma-separated, from {','.join(STAGES)}; 'none': only the summary (default: all)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="matrix backends at a time")
    parser.add_argument(
        "--backend", action="append", default=[], help="a built-in for the matrix (default: all)"
    )
    parser.add_argument(
        "--matrix-args", type=shlex.split, default=[], help="pytest arguments of both matrices"
    )
    parser.add_argument(
        "--perf-args", type=shlex.split, default=[], help="pytest arguments of the benchmarks"
    )
    parser.add_argument(
        "--perf-baseline", type=Path, default=PERF_BASELINE, help="default: %(default)s"
    )
    parser.add_argument(
        "--mutation-args",
        type=shlex.split,
        default=list(MUTATION_ARGS),
        help="tools/mutation.py run args (default: %(default)s: a 41-minute sample)",
    )
    return parser


def _recorded(out: Path) -> dict[str, StageResult]:
    path = out / "nightly.json"
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))["stages"]
    return {name: StageResult(**{**r, "logs": tuple(r["logs"])}) for name, r in raw.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    options = Options(
        out=args.out,
        backends=tuple(args.backend),
        jobs=args.jobs,
        matrix_args=tuple(args.matrix_args),
        perf_args=tuple(args.perf_args),
        perf_baseline=args.perf_baseline,
        mutation_args=tuple(args.mutation_args),
    )
    options.out.mkdir(parents=True, exist_ok=True)
    recorded = _recorded(options.out)
    for n, name in enumerate(args.stages, 1):
        print(f"[{n}/{len(args.stages)}] {name} ...", file=sys.stderr, flush=True)
        result = recorded[name] = STAGES[name](options)
        print(
            f"[{n}/{len(args.stages)}] {name} {result.status} in {result.seconds:.0f} s "
            f"{result.detail}",
            file=sys.stderr,
            flush=True,
        )
    stages = [recorded[name] for name in STAGES if name in recorded]
    (options.out / "nightly.json").write_text(
        json.dumps({"stages": {s.stage: dataclasses.asdict(s) for s in stages}}, indent=1),
        encoding="utf-8",
    )
    found = None if args.previous is None else regressions(options.out, args.previous)
    summary = render_summary(options.out, args.previous, stages, found)
    (options.out / "summary.md").write_text(summary, encoding="utf-8")
    print(summary, flush=True)
    failed = any(s.status == "failed" for s in stages) or (found is not None and found.found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
