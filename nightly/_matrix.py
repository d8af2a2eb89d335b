"""One matrix of every backend the nightly judged, built-in or third-party.

Each matrix stage runs ``python -m spec_tests matrix`` into a folder of its own under
``OUT/matrix-runs/`` (the third-party backends need a pytest root of their own, an S3 URL);
:func:`publish_matrix` folds every folder there into ``OUT/matrix.md`` and ``OUT/matrix.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from spec_tests.plugin.results import (
    BackendResult,
    aggregate,
    failed_run,
    load_result,
    render_markdown,
)
from spec_tests.plugin.results import to_json as matrix_json

__all__ = ["publish_matrix", "results_of"]


def results_of(folder: Path) -> list[BackendResult]:
    """The backend results of one ``spec_tests matrix`` run, in its order, with run times.

    The run's ``matrix.json`` lists its backends (a backend that could not run has only its
    error there); ``results/*.json`` hold the tests of those that ran.
    """
    listed = json.loads((folder / "matrix.json").read_text(encoding="utf-8"))["backends"]
    ran = {r.backend: r for r in map(load_result, sorted((folder / "results").glob("*.json")))}
    results = []
    for entry in listed:
        found = ran.get(entry["backend"])
        if found is None or entry["error"] is not None:
            found = failed_run(entry["backend"], entry["error"] or "no result file")
        results.append(dataclasses.replace(found, seconds=entry["seconds"]))
    return results


def publish_matrix(out: Path) -> None:
    """Write ``out/matrix.md`` and ``out/matrix.json`` from every run under ``out/matrix-runs``."""
    runs = sorted(p for p in (out / "matrix-runs").glob("*") if (p / "matrix.json").is_file())
    # built-ins first (one folder, or one per shard: builtins-2of3), then the third-party
    # backends beside them
    runs.sort(key=lambda p: (not p.name.startswith("builtins"), p.name))
    results = [r for folder in runs for r in results_of(folder)]
    if not results:
        return
    matrix = aggregate(results)
    (out / "matrix.md").write_text(render_markdown(matrix), encoding="utf-8")
    (out / "matrix.json").write_text(json.dumps(matrix_json(matrix), indent=1), encoding="utf-8")
