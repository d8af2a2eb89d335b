"""Nightly: the suite's multiprocess properties, many times in a row on correct backends.

They once failed correct backends at random: gloo aborted ranks that had passed
(pytorch/pytorch#179291, issue 17). Each backend gets one suite run in which every
multiprocess property runs REPEATS times; every one of them must pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spec_tests.plugin.results import load_result
from spec_tests.properties.multiprocess import MultiprocessProperties

REPEATS = 20

_SUITE = f"""
import pytest

from spec_tests.properties.multiprocess import MultiprocessProperties


@pytest.fixture(autouse=True, params=range({REPEATS}), ids=lambda i: f"run{{i + 1}}")
def repeat(request):
    return request.param


class TestMultiprocess(MultiprocessProperties):
    pass
"""


@pytest.mark.nightly
@pytest.mark.parametrize("backend", ["dcp_impl-fs", "torch-fs"])
def test_multiprocess_properties_pass_every_time(tmp_path: Path, backend: str) -> None:
    (tmp_path / "test_repeat.py").write_text(_SUITE, encoding="utf-8")
    report = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "test_repeat.py",
        f"--dcp-backend={backend}",
        f"--dcp-report={report}",
        "--hypothesis-profile=dcp-ci",
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=3600
    )
    assert report.is_file(), done.stdout[-8000:] + done.stderr[-4000:]
    result = load_result(report)  # the verdict is the report, as for the ranks
    properties = [name for name in dir(MultiprocessProperties) if name.startswith("test_")]
    why = f"{result.totals}\n{done.stdout[-8000:]}"
    assert result.totals["pass"] == REPEATS * len(properties), why
    assert not result.failed, why
