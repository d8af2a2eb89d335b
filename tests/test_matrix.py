"""The conformance matrix: aggregation and rendering of result files, and one real run."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from spec_tests.cli.main import main
from spec_tests.plugin.results import (
    BackendResult,
    Recorder,
    TestRecord,
    aggregate,
    counts_line,
    failed_run,
    load_result,
    render_markdown,
    to_json,
    verdict,
)


def _result(backend: str, *tests: tuple[str, str, str], exitstatus: int = 0) -> BackendResult:
    records = tuple(
        TestRecord(
            f"test_{prop.split('::')[0]}.py::{prop.split('::')[1]}[{n}]", prop, outcome, reason
        )
        for n, (prop, outcome, reason) in enumerate(tests)
    )
    return BackendResult(backend=backend, tests=records, exitstatus=exitstatus)


GOOD = _result(
    "good",
    ("roundtrip::test_dtypes", "pass", ""),
    ("roundtrip::test_dtypes", "pass", ""),
    ("faults::test_truncated", "skip", "backend 'good' does not claim capability 'integrity'"),
)
BAD = _result(
    "bad",
    ("roundtrip::test_dtypes", "pass", ""),
    ("roundtrip::test_dtypes", "fail", "AssertionError: bits differ\nat byte 3"),
    ("roundtrip::test_dtypes", "xfail", "known"),
    ("faults::test_truncated", "xpass", "fixed upstream?"),
    exitstatus=1,
)


def test_cell_is_the_worst_outcome_with_counts() -> None:
    matrix = aggregate([GOOD, BAD])
    assert matrix.properties == ("faults::test_truncated", "roundtrip::test_dtypes")
    assert matrix.cells["roundtrip::test_dtypes", "good"].render() == "pass (2/2)"
    assert matrix.cells["roundtrip::test_dtypes", "bad"].render() == "fail (1/3)"
    assert matrix.cells["faults::test_truncated", "bad"].render() == "xpass"
    assert matrix.cells["faults::test_truncated", "good"].render() == "skip"
    assert matrix.failed
    assert not GOOD.failed
    assert BAD.failed


def test_xfail_beats_pass_and_skip() -> None:
    result = _result("b", ("p::t", "skip", "s"), ("p::t", "xfail", "x"), ("p::t", "pass", ""))
    assert aggregate([result]).cells["p::t", "b"].outcome == "xfail"
    assert not result.failed


def test_nonzero_exit_fails_even_without_failing_tests() -> None:
    stale = BackendResult("b", (TestRecord("t.py::t", "p::t", "pass"),), 1, None, ("t.py::gone",))
    assert stale.failed
    text = render_markdown(aggregate([stale]))
    assert "xfail entry matches nothing: t.py::gone" in text


def test_a_backend_that_did_not_run_is_all_errors() -> None:
    broken = failed_run("mystore:B", "cannot import module 'mystore'")
    matrix = aggregate([GOOD, broken])
    assert {matrix.cells[p, "mystore:B"].outcome for p in matrix.properties} == {"error"}
    assert broken.totals["error"] == 1
    assert "**mystore:B**: did not run: cannot import module 'mystore'" in render_markdown(matrix)


def test_markdown_has_legend_table_totals_and_first_line_of_failures() -> None:
    text = render_markdown(aggregate([GOOD, BAD]))
    assert "worst outcome" in text
    assert "| property | good | bad |" in text
    assert "| `roundtrip::test_dtypes` | pass (2/2) | fail (1/3) |" in text
    assert "| good | conforms | - | 0 | 0 | 0 | 0 | 0 | 2 | 1 |" in text
    assert "| bad | **fails** | - | 0 | 1 | 1 | 1 | 0 | 1 | 0 |" in text
    assert "`test_roundtrip.py::test_dtypes[1]` fail: AssertionError: bits differ" in text
    assert "at byte 3" not in text
    assert "unexpectedly passed: fixed upstream?" in text


def test_verdict_counts_known_failures_and_shows_the_run_time() -> None:
    known = dataclasses.replace(
        _result(
            "known",
            ("roundtrip::test_dtypes", "xfail", "bug 1"),
            ("roundtrip::test_dtypes", "xfail", "bug 2"),
            ("roundtrip::test_names", "pass", ""),
            ("unclaimed::test_bytes", "refuses", "refused bytes loudly"),
        ),
        seconds=83.4,
    )
    one = _result("one", ("roundtrip::test_dtypes", "xfail", "bug 1"), ("a::test_a", "pass", ""))
    assert (verdict(GOOD), verdict(BAD)) == ("conforms", "fails")
    assert verdict(known) == "conforms except 2 listed bugs"
    assert verdict(one) == "conforms except 1 listed bug"
    assert counts_line(known) == "1 passed, 2 known failures, 0 unexpected, 0 skipped, 1 refuses"
    text = render_markdown(aggregate([known]))
    assert "| known | conforms except 2 listed bugs | 83 s | 0 | 0 | 0 | 2 | 1 | 1 | 0 |" in text
    assert "| `unclaimed::test_bytes` | refuses |" in text


def test_a_backend_whose_listed_bugs_outnumber_what_holds_is_mostly_unusable() -> None:
    # The case: 2 properties passed, 58 listed failures; "conforms except" misleads.
    rows = [(f"roundtrip::test_{n}", "xfail", "bug") for n in range(58)]
    rows += [("a::test_a", "pass", ""), ("a::test_b", "pass", ""), ("a::test_c", "skip", "")]
    result = _result("torchy", *rows)
    assert verdict(result) == "mostly unusable (58 listed bugs)"
    assert counts_line(result) == "2 passed, 58 known failures, 0 unexpected, 1 skipped, 0 refuses"
    # as many listed bugs as tests that held: still "conforms except"
    even = _result("even", ("a::test_a", "xfail", "bug"), ("a::test_b", "refuses", "loud"))
    assert verdict(even) == "conforms except 1 listed bug"
    assert counts_line(BAD).split(", ")[2] != "0 unexpected"


def test_torch_group_is_shown_apart_and_never_counts_against_a_backend() -> None:
    result = _result(
        "b",
        ("roundtrip::test_dtypes", "pass", ""),
        ("torch_planning::test_torch_save_planning_refuses_holes", "xfail", "torch bug 12"),
    )
    assert verdict(result) == "conforms"
    text = render_markdown(aggregate([result]))
    own, torch_part = text.split("## torch itself")
    assert "torch_planning" not in own.split("## Verdicts")[0]
    assert "| `torch_planning::test_torch_save_planning_refuses_holes` | xfail |" in torch_part
    data = to_json(aggregate([result]))
    assert data["torch_group"] == ["torch_planning::test_torch_save_planning_refuses_holes"]
    assert data["backends"][0]["verdict"] == "conforms"


def test_json_round_trips_the_cells() -> None:
    data = json.loads(json.dumps(to_json(aggregate([GOOD, BAD]))))
    assert data["failed"] is True
    assert data["properties"]["roundtrip::test_dtypes"]["bad"] == {
        "outcome": "fail",
        "counts": {"pass": 1, "fail": 1, "xfail": 1},
    }
    assert [b["backend"] for b in data["backends"]] == ["good", "bad"]
    assert data["backends"][1]["problems"][0]["reason"].startswith("AssertionError")


def test_result_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(
        json.dumps(
            {
                "format": 1,
                "backend": "x",
                "exitstatus": 0,
                "capabilities": None,
                "tests": [
                    {"nodeid": "a.py::t", "property": "a::t", "outcome": "pass", "reason": ""}
                ],
            }
        )
    )
    assert load_result(path) == BackendResult("x", (TestRecord("a.py::t", "a::t", "pass"),))
    path.write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="expected 1"):
        load_result(path)


def test_unknown_outcome_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        TestRecord("a.py::t", "a::t", "passed")


def test_end_to_end_on_a_tiny_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "suite" / "test_tiny.py"
    suite.parent.mkdir()
    suite.write_text(
        textwrap.dedent(
            """
            import pytest

            def test_named(dcp_backend):
                assert dcp_backend.name == "reference"

            @pytest.mark.dcp_requires("integrity")
            def test_integrity(dcp_backend):
                pass
            """
        )
    )
    out = tmp_path / "out"
    args = ["matrix", "--backend", "reference", "--backend", "no_such_module_q:B"]
    status = main([*args, "--out", str(out), "--suite", str(suite), "--", "-q"])
    assert status == 1  # the unimportable backend fails the gate
    captured = capsys.readouterr()
    printed = captured.out
    # progress: a numbered, timed line as each backend starts and ends (stderr, flushed)
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert any(line.startswith("[1/2] +") and "start reference" in line for line in progress)
    assert any(
        line.startswith("[1/2] +") and "done reference: conforms (1 passed, 0 known" in line
        for line in progress
    )
    assert any(
        line.startswith("[2/2] +") and "done no_such_module_q:B" in line for line in progress
    )
    assert "| `tiny::test_named` | pass | error |" in printed
    assert "| `tiny::test_integrity` | skip | error |" in printed
    assert "cannot import module 'no_such_module_q'" in printed
    assert (out / "matrix.md").read_text() + "\n" == printed
    assert json.loads((out / "matrix.json").read_text())["backends"][0]["failed"] is False


class _Report:
    """Just enough of pytest.TestReport for the Recorder."""

    def __init__(
        self, nodeid: str, when: str, outcome: str, longrepr: object = None, **extra: object
    ) -> None:
        self.nodeid, self.when, self.longrepr = nodeid, when, longrepr
        self.passed, self.failed, self.skipped = (
            outcome == o for o in ("passed", "failed", "skipped")
        )
        self.__dict__.update(extra)


class _Crash:
    def __init__(self, message: str) -> None:
        self.reprcrash = type("Crash", (), {"message": message})()


# What spec_tests.properties.unclaimed.record_refusal attaches through record_property.
_REFUSED = [("dcp_outcome", "refuses"), ("dcp_refused", "dtype:complex32")]


def test_recorder_maps_pytest_reports_to_outcomes() -> None:
    recorder = Recorder()
    recorder.names = {"t.py::a": ("suite/t.py::a", "t::a")}
    grouped = "  | ExceptionGroup: ...\n    | Traceback\n    | ValueError: bad bits\n"
    reports = [
        _Report("t.py::a", "setup", "passed"),
        _Report("t.py::a", "call", "passed"),
        _Report("t.py::a", "teardown", "failed", _Crash("OSError: cleanup")),  # worse: wins
        _Report("t.py::b", "setup", "skipped", ("f.py", 1, "Skipped: no 'bytes'")),
        _Report("t.py::c", "call", "skipped", None, wasxfail="known bug"),
        _Report("t.py::d", "call", "failed", "[XPASS(strict)] known bug"),
        _Report("t.py::r", "call", "passed", user_properties=_REFUSED),
        _Report(
            "t.py::e",
            "call",
            "failed",
            _Crash("ExceptionGroup: Hypothesis found 2 distinct failures."),
            longreprtext=grouped,
        ),
    ]
    for report in reports:
        recorder.add(report)
    got = {r.nodeid: (r.property, r.outcome, r.reason) for r in recorder.records.values()}
    assert got == {
        "suite/t.py::a": ("t::a", "fail", "error in teardown: OSError: cleanup"),
        "t.py::b": ("t.py::b", "skip", "no 'bytes'"),
        "t.py::c": ("t.py::c", "xfail", "known bug"),
        "t.py::d": ("t.py::d", "xpass", "known bug"),
        "t.py::r": ("t.py::r", "refuses", "refused dtype:complex32 loudly"),
        "t.py::e": (
            "t.py::e",
            "fail",
            "Hypothesis found 2 distinct failures. First: ValueError: bad bits",
        ),
    }


def test_long_reasons_are_cut_and_empty_headlines_completed() -> None:
    recorder = Recorder()
    crash = _Crash("ProcessRaisedException: \n\n-- Process 0 terminated\nValueError: rank 0 broke")
    recorder.add(_Report("t.py::m", "call", "failed", crash))
    assert recorder.records["t.py::m"].reason == "ProcessRaisedException: ValueError: rank 0 broke"
    long = _result("b", ("p::t", "fail", "x" * 1000))
    problems = render_markdown(aggregate([long])).split("## Failures")[1]
    assert "x" * 239 + "…" in problems
    assert "x" * 240 not in problems
