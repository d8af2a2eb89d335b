"""The suite's failure summary: replay commands and the shortest failing example (issue 27)."""

from __future__ import annotations

import shlex
from types import SimpleNamespace
from typing import Any, cast

import pytest

from spec_tests.plugin.summary import RunInfo, replay_note, rerun_command, shortest_example

_GROUP = """
  | spec_tests.contract.verdicts.ContractViolation: 't' box Box((0,), (3,)): 3 of 3 bytes differ
  | Failing test case: test_every_claimed_dtype(
  |     self=<spec_tests.test_roundtrip.TestRoundTrip object at 0x7f>,
  |     dcp_backend=<backend 'mystore'>,
  |     dcp_location=new_location,
  |     data=data(...),
  | )
  | Draw 1 (dtype): DtypeInfo(torch_dtype=torch.float32, name='float32')
  | Draw 2 (shape): (3,)
  | Explanation:
  |     These lines were always and only run by failing test cases:
  +---------------- 2 ----------------
  | TypeError: torch.iinfo() requires an integer input type
  | Failing test case: test_every_claimed_dtype(
  |     dcp_backend=<backend 'mystore'>,
  | )
  | Draw 1 (dtype): u8
  | Draw 2 (shape): ()
"""


def _item(module: str, name: str, nodeid: str) -> pytest.Item:
    fake = SimpleNamespace(module=SimpleNamespace(__name__=module), originalname=name, name=name)
    fake.nodeid = nodeid
    return cast(pytest.Item, fake)


def test_the_shortest_example_comes_with_its_own_error_and_without_fixtures() -> None:
    error, lines = shortest_example(_GROUP)
    assert error == "TypeError: torch.iinfo() requires an integer input type"
    assert lines == [
        "Failing test case: test_every_claimed_dtype(",
        "Draw 1 (dtype): u8",
        "Draw 2 (shape): ()",
    ]
    assert shortest_example("AssertionError: no hypothesis here") == ("", [])


def test_pytest_error_margins_are_read_too() -> None:
    text = "E   ValueError: bad\nE   Falsifying example: test_x(\nE       case=(1,),\nE   )\n"
    assert shortest_example(text) == (
        "ValueError: bad",
        ["Falsifying example: test_x(", "case=(1,),"],
    )


def test_the_replay_command_names_the_real_spec_profile_and_seed() -> None:
    run = RunInfo(spec="mystore.conformance:MyStoreBackend", profile="dcp-dev", seed="7")
    item = _item("spec_tests.test_roundtrip", "test_noncontiguous_tensors", "x::y")
    words = shlex.split(rerun_command(item, run))
    assert words == [
        "python",
        "-m",
        "pytest",
        "--pyargs",
        "spec_tests.test_roundtrip",
        "-k",
        "test_noncontiguous_tensors",
        "--dcp-backend=mystore.conformance:MyStoreBackend",
        "--hypothesis-profile=dcp-dev",
        "--hypothesis-seed=7",
    ]
    # a kit subclass in the author's own file is named by its node id
    mine = _item("test_mine", "test_odd_names", "tests/test_mine.py::TestMine::test_odd_names[a]")
    kit: Any = shlex.split(rerun_command(mine, RunInfo(spec="m:B", root="s3://b/p")))
    assert kit[3:] == [
        "tests/test_mine.py::TestMine::test_odd_names",
        "--dcp-backend=m:B",
        "--hypothesis-profile=dcp-dev",
        "--dcp-root=s3://b/p",
    ]


def test_the_replay_note_says_how_the_example_comes_back() -> None:
    assert "same draws" in replay_note(RunInfo(profile="dcp-ci", derandomized=True))
    assert ".hypothesis/" in replay_note(RunInfo(database=True))
    assert "@reproduce_failure" in replay_note(RunInfo(database=False))
