"""Nightly: a built-in's verdict does not depend on the draw.

Under the suite's default profile (``dcp-dev``, random draws) each built-in gets one suite
run per ``--hypothesis-seed``: seeds 1 to SEEDS, or those ``DCP_VERDICT_SEEDS=FIRST:COUNT``
names (the nightly passes the night's, a new window each night). Every run's verdict must be
the ``dcp-ci`` verdict: no unexpected failure (a listed expected failure that a run's draws
miss is reported, never a failure, so only failures outside every entry change a verdict). A
run that fails names its seed and its failing tests: rerun it with the same
``--hypothesis-seed`` and ``-p no:randomly``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nightly.stages import verdict_seeds
from spec_tests.backends import BUILTIN_NAMES
from spec_tests.plugin.results import BackendResult, load_result

SEEDS = 20


def _run(tmp_path: Path, backend: str, *args: str) -> BackendResult:
    report = tmp_path / f"{backend}-{'-'.join(a.lstrip('-') for a in args)}.json"
    command = [
        sys.executable, "-m", "pytest", "--pyargs", "spec_tests", f"--dcp-backend={backend}",
        f"--dcp-report={report}", "-p", "no:randomly", "-p", "no:cacheprovider", "-q", *args,
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=3600
    )
    assert report.is_file(), done.stdout[-8000:] + done.stderr[-4000:]
    return load_result(report)


def _failures(result: BackendResult) -> list[str]:
    return [f"{t.nodeid}: {t.outcome}: {t.reason[:300]}" for t in result.tests if t.outcome in
            ("error", "fail", "xpass")]  # fmt: skip


@pytest.mark.nightly
@pytest.mark.parametrize("backend", BUILTIN_NAMES)
def test_verdict_is_the_same_under_every_seed(tmp_path: Path, backend: str) -> None:
    ci = _run(tmp_path, backend, "--hypothesis-profile=dcp-ci")
    differing = {}
    for seed in verdict_seeds(os.environ, SEEDS):
        run = _run(tmp_path, backend, "--hypothesis-profile=dcp-dev", f"--hypothesis-seed={seed}")
        if run.failed != ci.failed:
            differing[seed] = _failures(run) or [f"exit status {run.exitstatus}"]
    lines = [f"seed {seed}: {line}" for seed, found in differing.items() for line in found]
    assert not differing, f"{backend}: dcp-ci says failed={ci.failed}; these seeds differ:\n" + (
        "\n".join(lines)
    )
