"""perf's multi-process rows: rounds timed inside the ranks stored as a benchmark's rounds
(``perf.bench.record``), read back with their process count, and the scaling table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _perf import perf_module

report = perf_module("report")
scaling = perf_module("scaling")

_ROOT = Path(__file__).resolve().parents[1]
GB = 10**9

_RECORDED = """
from perf.bench import Case, record

def test_recorded(benchmark):
    case = Case("mp-load", "bf16x64-rows", "mine", "backend", 10**9, "cpu", 2)
    record(benchmark, case, [0.5, 0.25, 1.0])
"""


def _mp(subject: str, op: str, procs: int, seconds: float) -> dict[str, Any]:
    key = f"t::test_multiprocess[{subject}-{procs}-{op}]"
    info = {
        "op": f"mp-{op}",
        "workload": "bf16x64-rows",
        "subject": subject,
        "kind": "backend",
        "nbytes": GB,
        "device": "cpu",
        "procs": procs,
    }
    return {"fullname": key, "name": key, "extra_info": info, "stats": {"median": seconds}}


def _pytest(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_recorded.py").write_text(_RECORDED)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "test_recorded.py",
            "-q",
            "-p",
            "no:cacheprovider",
            *options,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_recorded_rounds_are_the_benchmarks_rounds(tmp_path: Path) -> None:
    done = _pytest(tmp_path, "--benchmark-json=run.json")
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads((tmp_path / "run.json").read_text())
    (bench,) = document["benchmarks"]
    assert bench["stats"]["rounds"] == 3
    assert bench["extra_info"]["gbps"] == pytest.approx(2.0)
    (row,) = report.load_rows(tmp_path / "run.json")
    assert (row.op, row.procs, row.median) == ("mp-load", 2, 0.5)
    assert "not used" not in done.stdout + done.stderr


def test_recorded_rounds_with_timing_disabled_store_nothing(tmp_path: Path) -> None:
    done = _pytest(tmp_path, "--benchmark-disable")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rows_without_a_process_count_moved_their_bytes_in_one() -> None:
    bench = _mp("mine", "load", 2, 1.0)
    del bench["extra_info"]["procs"]
    (row,) = report.rows_from({"benchmarks": [bench]}, "run")
    assert row.procs == 1


@pytest.mark.parametrize("procs", [0, "2", 1.5])
def test_rows_refuse_a_process_count_that_is_not_a_count(procs: object) -> None:
    bench = _mp("mine", "load", 2, 1.0)
    bench["extra_info"]["procs"] = procs
    with pytest.raises(report.ReportError, match=r"extra_info\.procs"):
        report.rows_from({"benchmarks": [bench]}, "run")


def test_efficiency_is_throughput_over_n_times_one_process() -> None:
    assert scaling.efficiency(4.0, 2.0, 2) == 1.0
    assert scaling.efficiency(2.0, 2.0, 4) == 0.25


def test_the_scaling_table_puts_backends_side_by_side() -> None:
    benches = [
        _mp("mine", "load", 1, 1.0),  # 1 GB/s
        _mp("mine", "load", 2, 0.625),  # 1.6 GB/s: 0.8 of 2 GB/s
        _mp("theirs", "load", 1, 0.5),  # 2 GB/s
        _mp("theirs", "save", 4, 1.0),  # no 1-process row: no efficiency
    ]
    table = scaling.format_scaling(report.rows_from({"benchmarks": benches}, "run"))
    assert table is not None
    lines = table.splitlines()
    assert "1 procs: GB/s (eff.)" in lines[0]
    assert "4 procs: GB/s (eff.)" in lines[0]
    mine = next(line for line in lines if "mine" in line).split()
    assert mine[-4:] == ["1.00", "1.60", "(0.80)", "-"]  # no 4-process row of its own
    theirs_save = next(line for line in lines if "mp-save" in line)
    assert theirs_save.split()[-1] == "1.00"
    assert scaling.format_scaling([]) is None


def test_the_report_prints_the_scaling_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.json"
    path.write_text(
        json.dumps({"benchmarks": [_mp("mine", "load", 1, 1.0), _mp("mine", "load", 2, 0.5)]})
    )
    assert report.main([str(path), "--no-chart"]) == 0
    out = capsys.readouterr().out
    assert "multi-process scaling" in out
    assert "2.00 (1.00)" in out
