"""``python -m nightly.compat``: the matrix across torch releases, and which release has a bug."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _perf import checkout_module

from spec_tests.plugin.results import BackendResult, TestRecord, aggregate, failed_run, to_json

compat = checkout_module("nightly", "compat")

RELEASES = ("2.11.0", "2.12.1", "2.13.0", "2.14.1")
STALE = "faults::test_stale_files_never_read"
ROW = f"| 5 | HF: stale shard files are read | `{STALE}` | `torch-hf` | x |"


def _matrix(outcome: str) -> dict[str, Any]:
    tests = (
        TestRecord(
            "test_faults.py::T::test_stale_files_never_read",
            "faults::test_stale_files_never_read",
            outcome,
        ),
        TestRecord("test_roundtrip.py::T::test_a", "roundtrip::test_a", "pass"),
    )
    return to_json(aggregate([BackendResult("torch-hf", tests)]))


def _runs(*outcomes: str) -> dict[str, dict[str, Any]]:
    return dict(zip(RELEASES, map(_matrix, outcomes), strict=True))


def test_span_groups_consecutive_releases() -> None:
    assert compat.span(RELEASES, ["2.11.0", "2.12.1", "2.14.1"]) == "2.11.0 to 2.12.1, 2.14.1"
    assert compat.span(RELEASES, list(RELEASES)) == "2.11.0 to 2.14.1"


def test_a_bug_fixed_in_a_later_release_is_named_by_the_releases_that_have_it() -> None:
    # Fixed in 2.13: there its entry (torch = "<2.13") no longer applies and the test passes.
    runs = _runs("xfail", "xfail", "pass", "pass")
    assert compat.bug_releases(runs, ROW) == "2.11.0 to 2.12.1"
    document = compat.render(runs)
    differing = document.split("## Properties whose outcome depends")[1].split("## Every")[0]
    assert "**xfail (2.11.0 to 2.12.1); pass (2.13.0 to 2.14.1)**" in differing
    assert "roundtrip::test_a" not in differing  # the same on every release


def test_a_bug_every_release_has_or_none_has() -> None:
    assert compat.bug_releases(_runs("xfail", "xfail", "xfail", "xfail"), ROW) == "2.11.0 to 2.14.1"
    # xpass: the listed failure did not happen, the bug is gone there too
    assert (
        compat.bug_releases(_runs("pass", "xpass", "pass", "pass"), ROW)
        == "none of 2.11.0 to 2.14.1"
    )
    assert (
        compat.bug_releases(_runs("skip", "skip", "skip", "skip"), ROW) == "not reached (skipped)"
    )
    other = ROW.replace("`torch-hf`", "`torch-hf-defaults`")  # a backend the runs did not have
    assert (
        compat.bug_releases(_runs("xfail", "xfail", "xfail", "xfail"), other) == "not in these runs"
    )


def test_a_backend_that_could_not_run_says_nothing_about_a_bug() -> None:
    runs = _runs("xfail", "xfail", "pass", "pass")
    runs["2.14.1"] = to_json(aggregate([failed_run("torch-hf", "ImportError: no module")]))
    assert compat.bug_releases(runs, ROW) == "2.11.0 to 2.12.1"


def test_generated_documents_come_from_the_copied_runs(tmp_path: Path) -> None:
    runs, docs = tmp_path / "compat-results", tmp_path / "docs"
    for release, outcome in zip(RELEASES, ("xfail", "xfail", "xfail", "pass"), strict=True):
        (runs / f"torch-{release}").mkdir(parents=True)
        (runs / f"torch-{release}" / "matrix.json").write_text(json.dumps(_matrix(outcome)))
        (runs / f"torch-{release}" / "matrix.md").write_text("# matrix\n")
    docs.mkdir()
    table = "| # | bug | property | backend(s) | xfail entry |\n| --- | --- | --- | --- | --- |\n"
    (docs / "known-bugs.md").write_text(f"# bugs\n\n{table}{ROW}\n\nmore text\n")
    assert compat.main([f"--runs={runs}", f"--docs={docs}"]) == 0
    assert (docs / "compatibility" / "torch-2.14.1" / "matrix.json").is_file()
    assert "2.11.0, 2.12.1, 2.13.0, 2.14.1" in (docs / "compatibility.md").read_text()
    bugs = (docs / "known-bugs.md").read_text()
    assert "| x | 2.11.0 to 2.13.0 |" in bugs
    # rewriting from the copies alone gives the same documents
    assert compat.main([f"--docs={docs}"]) == 0
    assert (docs / "known-bugs.md").read_text() == bugs
    assert bugs.count("torch releases with it") == 1


def test_releases_whose_runs_lack_the_property_are_named_beside_those_with_the_bug() -> None:
    runs = _runs("xfail", "xfail", "xfail", "xfail")
    for release in RELEASES[:2]:  # runs from before the property existed
        runs[release] = _matrix("pass") | {"properties": {}}
    assert compat.bug_releases(runs, ROW) == "2.13.0 to 2.14.1; not in the runs of 2.11.0 to 2.12.1"


def test_a_pass_of_an_entry_that_is_not_strict_does_not_show_the_bug_fixed() -> None:
    runs = _runs("xfail", "xfail", "xfail", "pass")
    timing = ROW.replace("| x |", "| `torch-hf.toml` (not strict: near the bound) |")
    assert compat.bug_releases(runs, timing) == (
        "2.11.0 to 2.13.0; passed on 2.14.1, which does not show it fixed (not strict)"
    )
    assert compat.bug_releases(runs, ROW) == "2.11.0 to 2.13.0"  # a strict entry's pass does
    passes = _runs("pass", "pass", "pass", "pass")
    assert compat.bug_releases(passes, timing) == (
        "passed on 2.11.0 to 2.14.1, which does not show it fixed (not strict)"
    )
