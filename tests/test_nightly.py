"""The nightly job (``python -m nightly``): its summary names what regressed since a previous
night. Run as a user runs it, from the repository root; the expensive stages are left out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _planted import DELAY_VARIABLE

from spec_tests.plugin.results import BackendResult, TestRecord, aggregate, to_json

ROOT = Path(__file__).resolve().parent.parent
#: One save benchmark of the planted backend, and the baselines it is a ratio to: seconds.
PLANTED_PERF = (
    "perf/test_save.py --perf-size=tiny --perf-rounds=2 --perf-backends=_planted:PlantedFS "
    "-k 'transformer and nosync'"
)


def _nightly(*args: str, delay_s: float = 0.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), DELAY_VARIABLE: str(delay_s)}
    return subprocess.run(
        [sys.executable, "-m", "nightly", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _summary(folder: Path) -> str:
    return (folder / "summary.md").read_text(encoding="utf-8")


def test_summary_names_a_slowdown_planted_in_a_wrapper_backend(tmp_path: Path) -> None:
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    perf = ("--stages=perf", f"--perf-args={PLANTED_PERF}")
    first = _nightly(*perf, f"--out={fast}")
    assert first.returncode == 0, first.stdout + first.stderr
    second = _nightly(*perf, f"--out={slow}", f"--previous={fast}", delay_s=1.0)
    assert second.returncode == 1, second.stdout + second.stderr
    summary = _summary(slow)
    top = summary.split("## This night")[0]
    assert f"Regressed since `{fast}`" in top
    assert "planted-fs" in top or "PlantedFS" in top, top
    assert "transformer-nosync" in top
    # The stored baseline has no planted-fs row: the exit status is the regression between
    # the two nights, not the gate.
    stages = json.loads((slow / "nightly.json").read_text(encoding="utf-8"))["stages"]
    assert stages["perf"]["status"] == "passed"
    assert (slow / "perf.json").is_file()
    assert (slow / "perf-gate.txt").is_file()


def _night(folder: Path, outcome: str, reason: str = "") -> Path:
    record = TestRecord(
        "test_roundtrip.py::TestRoundTrip::test_a", "roundtrip::test_a", outcome, reason
    )
    matrix = aggregate([BackendResult("dcp_impl-fs", (record,))])
    folder.mkdir()
    (folder / "matrix.json").write_text(json.dumps(to_json(matrix)), encoding="utf-8")
    return folder


def test_summary_names_a_property_that_passed_before_and_fails_now(tmp_path: Path) -> None:
    before = _night(tmp_path / "before", "pass")
    now = _night(tmp_path / "now", "fail", "ContractViolation: bytes differ")
    result = _nightly("--stages=none", f"--out={now}", f"--previous={before}")
    assert result.returncode == 1
    top = _summary(now).split("## This night")[0]
    assert "**dcp_impl-fs**: conforms → fails" in top
    assert "`roundtrip::test_a` on **dcp_impl-fs**: pass → fail" in top
    assert "bytes differ" in top  # named as a new unexpected failure, with its reason


def test_a_property_fixed_since_the_previous_night_is_no_regression(tmp_path: Path) -> None:
    before = _night(tmp_path / "before", "fail", "ContractViolation: bytes differ")
    now = _night(tmp_path / "now", "pass")
    result = _nightly("--stages=none", f"--out={now}", f"--previous={before}")
    assert result.returncode == 0, result.stdout
    summary = _summary(now)
    assert "Nothing regressed since" in summary
    assert "**dcp_impl-fs**: fails → conforms" in summary.split("Better than the previous")[1]
    assert "`roundtrip::test_a` on **dcp_impl-fs**: fail → pass" in summary


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--stages=matrix,nap"], "expected 'none' or a comma-separated list of matrix"),
        (["--previous=/nonexistent"], "expected a nightly results folder"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], error: str, tmp_path: Path) -> None:
    result = _nightly(f"--out={tmp_path}", *args)
    assert result.returncode == 2
    assert error in result.stderr
