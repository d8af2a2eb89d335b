"""A failing large property reports its verdict within the memory bound docs/conformance.md
states ("Bounded memory"): the interpreter plus a small multiple of the largest case.

The suite's large properties run in a subprocess (as CI runs them, under ``dcp-ci``) on a
backend that stores the last byte of every item of 16 MiB or more wrong; the run must name
each failure with its repro note, and its peak resident memory stay under the bound. Once,
a drawn 64 MiB case was shrunk through hundreds of replays and the run was killed past
22 GiB before any verdict was written.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
MIB = 1 << 20
#: The suite's largest case under dcp-ci (spec_tests.properties.checks.LARGE_BYTES).
CASE = 64 * MIB
#: The bound: the interpreter with torch and the suite loaded, plus this many cases.
INTERPRETER = 1024 * MIB
FACTOR = 8

# Measures only the suite's process: a fresh interpreter whose one child is that run.
_MEASURE = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"rc": done.returncode, "out": done.stdout + done.stderr, "peak": peak}))
"""

LARGE = [
    "test_large_tensors[contiguous]",
    "test_large_tensors[transposed]",
    "test_reshard_large",
]


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("bounded-memory")
    suite = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "spec_tests.test_roundtrip",
        "spec_tests.test_resharding",
        "--dcp-backend=_large_fault:LastByteOfLargeItems",
        f"--dcp-root={root}",
        "--hypothesis-profile=dcp-ci",
        "--dcp-maxfail=0",  # every large property must report, not the first three
        "-k",
        "large or boundaries",
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    paths = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *suite],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_large_properties_fail_with_their_repro(failing_run: dict[str, object]) -> None:
    out = str(failing_run["out"])
    assert failing_run["rc"] == 1, out[-3000:]
    for name in LARGE:
        failed = rf"FAILED spec_tests/test_\w+\.py::\w+::{re.escape(name)}"
        assert re.search(failed, out), f"{name} not reported failing\n{out[-3000:]}"
    assert out.count("DCP conformance failure for backend 'LastByteOfLargeItems'") >= len(LARGE)
    assert "replay: python -m pytest --pyargs spec_tests" in out


def test_peak_memory_stays_within_the_bound(failing_run: dict[str, object]) -> None:
    peak = int(str(failing_run["peak"]))
    bound = INTERPRETER + FACTOR * CASE
    assert peak <= bound, f"peak RSS {peak / MIB:.0f} MiB, bound {bound / MIB:.0f} MiB"


def test_large_cases_are_fixed_not_drawn() -> None:
    # A drawn case is shrunk and explained when it fails: hundreds of replays of its size.
    from spec_tests.properties.huge import HugeProperties
    from spec_tests.properties.resharding import ReshardingProperties
    from spec_tests.properties.roundtrip import RoundTripProperties

    for test in (
        RoundTripProperties.test_large_tensors,
        RoundTripProperties.test_sizes_cross_buffer_boundaries,
        ReshardingProperties.test_reshard_large,
        HugeProperties.test_tensor_over_2_gib,
        HugeProperties.test_rank_data_over_4_gib,
    ):
        assert getattr(test, "hypothesis", None) is None, test.__qualname__


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.float32, torch.complex128])
def test_the_large_pattern_never_repeats_a_word(dtype: torch.dtype) -> None:
    from spec_tests.properties.large import large_pattern

    value = large_pattern(4096 + 3, dtype, seed=7)
    raw = value.view(torch.uint8)
    assert raw.numel() >= 4096 + 3
    if dtype is not torch.bool:
        words = raw[: raw.numel() // 8 * 8].view(torch.int64)
        assert words.unique().numel() == words.numel()
        assert not torch.equal(raw, large_pattern(4096 + 3, dtype, seed=8).view(torch.uint8))
    else:
        assert set(raw.tolist()) == {0, 1}
