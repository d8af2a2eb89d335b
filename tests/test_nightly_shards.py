"""The nightly in shards (``python -m nightly --shard K/N``): N machines share one night's
per-backend work, and their folders merge into one night's results."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nightly.stages import (
    REPEAT_TESTS,
    SEEDS_VARIABLE,
    STAGES,
    VERDICT_SEEDS,
    Shard,
    night_seeds,
    repeat_tests,
    verdict_seeds,
)
from spec_tests.backends import BUILTIN_NAMES

ROOT = Path(__file__).resolve().parent.parent
#: One cheap property, so a real matrix stage takes seconds.
CHEAP = "--matrix-args=-k test_extra_kwargs_accepted"


def _nightly(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "nightly", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


@given(st.lists(st.text(min_size=1), unique=True, max_size=20), st.integers(1, 8))
def test_shards_split_the_backends_into_disjoint_parts_that_cover_them(
    names: list[str], count: int
) -> None:
    parts = [Shard(k, count).picks(names) for k in range(1, count + 1)]
    assert sorted(n for part in parts for n in part) == sorted(names)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # shares differ by one at most


def test_repeat_shards_run_each_repeat_test_once() -> None:
    runs = [t for k in (1, 2, 3) for t in repeat_tests(Shard(k, 3))]
    assert len(runs) == len(set(runs)) == len(REPEAT_TESTS) + len(BUILTIN_NAMES)
    assert {t.split("[")[-1].rstrip("]") for t in runs if "[" in t} == set(BUILTIN_NAMES)
    assert repeat_tests(Shard()) == (*REPEAT_TESTS, VERDICT_SEEDS)


@pytest.mark.parametrize("text", ["0/3", "4/3", "2", "a/b", "1/0"])
def test_a_shard_out_of_range_is_a_usage_error(text: str, tmp_path: Path) -> None:
    result = _nightly(f"--out={tmp_path}", "--stages=none", f"--shard={text}")
    assert result.returncode == 2
    assert "expected K/N with 1 <= K <= N" in result.stderr


def test_shard_folders_merge_into_one_night(tmp_path: Path) -> None:
    shards = {1: "reference", 2: "dcp_impl-fs"}
    for k, backend in shards.items():
        out = tmp_path / f"shard{k}"
        result = _nightly(
            f"--out={out}", "--stages=matrix", f"--shard={k}/2", f"--backend={backend}", CHEAP
        )
        assert result.returncode == 0, result.stdout + result.stderr
        shutil.copytree(out, tmp_path / "night", dirs_exist_ok=True)  # as an artifact download

    result = _nightly(f"--out={tmp_path / 'night'}", "--stages=none")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "night" / "summary.md").read_text(encoding="utf-8")
    assert "| matrix-1of2 | passed |" in summary
    assert "| matrix-2of2 | passed |" in summary
    matrix = (tmp_path / "night" / "matrix.md").read_text(encoding="utf-8")
    assert all(backend in matrix for backend in shards.values())


def test_the_scheduled_workflow_runs_every_stage_once_and_every_shard() -> None:
    workflow = (ROOT / ".github" / "workflows" / "nightly.yml").read_text(encoding="utf-8")
    parts = re.findall(r"--stages ([a-z,]+)", workflow)
    named = [stage for part in parts if part != "none" for stage in part.split(",")]
    assert sorted(named) == sorted(STAGES)
    shards = int(re.search(r"SHARDS: (\d+)", workflow)[1])  # type: ignore[index]
    listed = re.search(r"shard: \[([\d, ]+)\]", workflow)[1]  # type: ignore[index]
    assert [int(k) for k in listed.split(",")] == list(range(1, shards + 1))
    assert "--stages none" in workflow  # the summary job merges the parts


@given(st.dates(), st.integers(1, 20))
def test_each_night_tries_the_seeds_after_the_previous_nights(
    day: datetime.date, per_night: int
) -> None:
    today = night_seeds(day, per_night)
    assert len(today) == per_night
    assert today.start >= 1
    if day < datetime.date.max:
        assert night_seeds(day + datetime.timedelta(days=1), per_night).start == today.stop


def test_verdict_seeds_come_from_the_variable_or_default_to_one_to_twenty() -> None:
    assert verdict_seeds({}, 20) == range(1, 21)
    assert verdict_seeds({SEEDS_VARIABLE: "81:4"}, 20) == range(81, 85)
    for bad in ("81", "a:4", "81:0", "-3:2"):
        with pytest.raises(ValueError, match="expected FIRST:COUNT"):
            verdict_seeds({SEEDS_VARIABLE: bad}, 20)
