"""``python -m nightly``: run the nightly's stages into one results folder, then summarize.

Usage (from the repository root; ``nox -s nightly`` installs what it needs and runs this)::

    python -m nightly [--out DIR] [--previous DIR] [--stages matrix,perf] [--jobs N]
                      [--shard K/N] [--backend SPEC ...] [--matrix-args ARGS]
                      [--perf-args ARGS] [--perf-baseline PATH] [--mutation-args ARGS]

Stages run in the order ``--stages`` names them (default: all, in :data:`nightly.STAGES`
order; ``none``: only rewrite the summary), so a part can be rerun into the same folder. Each
stage's last result is kept in ``records/<stage>.json`` (and all of them in ``nightly.json``),
so folders that shards of one night wrote (``--shard K/N``) merge by copying them into one
and running ``--stages none`` there. Exits 1 when a stage failed or something regressed since
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
from typing import Any

from nightly._matrix import publish_matrix
from nightly._summary import regressions, render_summary
from nightly.stages import MUTATION_ARGS, PERF_BASELINE, STAGES, Options, Shard, StageResult


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


def _shard(text: str) -> Shard:
    index, _, count = text.partition("/")
    try:
        return Shard(int(index), int(count))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"shard: expected K/N with 1 <= K <= N (say 2/3), got {text!r}"
        ) from None


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
        "--shard",
        type=_shard,
        default=Shard(),
        help="K/N: this machine's share of the per-backend stages (matrix, repeat); default 1/1",
    )
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


def _record(raw: dict[str, Any]) -> StageResult:
    return StageResult(**{**raw, "logs": tuple(raw["logs"])})


def _recorded(out: Path) -> dict[str, StageResult]:
    """Every stage result kept in ``out``: one file each under ``records/`` (a folder from
    before those files has only ``nightly.json``)."""
    found: dict[str, StageResult] = {}
    legacy = out / "nightly.json"
    if legacy.is_file():
        for raw in json.loads(legacy.read_text(encoding="utf-8"))["stages"].values():
            found[raw["stage"]] = _record(raw)
    for path in sorted((out / "records").glob("*.json")):
        result = _record(json.loads(path.read_text(encoding="utf-8")))
        found[result.stage] = result
    return found


def _keep(out: Path, result: StageResult) -> None:
    records = out / "records"
    records.mkdir(exist_ok=True)
    text = json.dumps(dataclasses.asdict(result), indent=1)
    (records / f"{result.stage}.json").write_text(text, encoding="utf-8")


def _in_stage_order(results: dict[str, StageResult]) -> list[StageResult]:
    order = {name: n for n, name in enumerate(STAGES)}
    # a shard's record is the stage's name and the shard's: matrix-2of3
    return sorted(results.values(), key=lambda s: (order[s.stage.partition("-")[0]], s.stage))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    options = Options(
        out=args.out,
        backends=tuple(args.backend),
        shard=args.shard,
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
        result = STAGES[name](options)
        recorded[result.stage] = result
        _keep(options.out, result)
        print(
            f"[{n}/{len(args.stages)}] {name} {result.status} in {result.seconds:.0f} s "
            f"{result.detail}",
            file=sys.stderr,
            flush=True,
        )
    # Every matrix run in the folder, this night's stages' and any shard's copied in.
    publish_matrix(options.out)
    stages = _in_stage_order(recorded)
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
