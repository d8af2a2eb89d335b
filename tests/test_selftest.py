"""The self-test: its runner's accounting and exit status, the catalogue, and the probe."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from spec_tests.backends import Backend, builtin
from spec_tests.cli.probe import NOT_PROBED, probe_claims
from spec_tests.cli.selftest import (
    Entry,
    discount_shared,
    entries_of,
    judge,
    render,
    run,
    suite_order,
)
from spec_tests.plugin.results import BackendResult, TestRecord
from spec_tests.selftest import BROKEN, FAITHFUL, protocol, readers, writers
from spec_tests.selftest.wrap import Wrapped

# --- the catalogue --------------------------------------------------------------------------------


def test_catalogue_has_25_documented_broken_backends() -> None:
    assert len(BROKEN) >= 25
    assert len({b.__qualname__ for b in BROKEN}) == len(BROKEN)
    for backend in BROKEN:
        assert "Family" in (backend.__doc__ or ""), backend
        assert backend.family, backend
        assert backend.base in ("reference", "dcp_impl-fs"), backend
    assert {b.base for b in FAITHFUL} == {"reference", "dcp_impl-fs"}


def test_faithful_wrappers_claim_what_their_base_claims() -> None:
    for backend in FAITHFUL:
        assert backend().capabilities == builtin(backend.base).capabilities


def test_suite_order_runs_the_family_first_and_multiprocess_last() -> None:
    stems = ["contract", "faults", "hostile", "multiprocess", "roundtrip"]
    assert suite_order("faults", stems) == [
        "spec_tests.test_faults",
        "spec_tests.test_contract",
        "spec_tests.test_roundtrip",
        "spec_tests.test_hostile",
        "spec_tests.test_multiprocess",
    ]
    assert suite_order("multiprocess", stems)[0] == "spec_tests.test_multiprocess"
    assert suite_order("nonexistent", stems)[-1] == "spec_tests.test_multiprocess"


# --- verdicts -------------------------------------------------------------------------------------


def _result(*outcomes: str, exitstatus: int = 0, error: str | None = None) -> BackendResult:
    tests = tuple(
        TestRecord(f"test_x.py::test_{n}", f"x::test_{n}", o, f"why {n}")
        for n, o in enumerate(outcomes)
    )
    return BackendResult("b", tests, exitstatus, error=error)


BROKEN_ENTRY = Entry("Bad", "m:Bad", faithful=False, family="x")
FAITHFUL_ENTRY = Entry("Good", "m:Good", faithful=True)


def test_a_failing_test_kills_a_broken_backend_and_names_itself() -> None:
    verdict = judge(BROKEN_ENTRY, _result("pass", "skip", "fail", exitstatus=1), 1.0)
    assert (verdict.outcome, verdict.test, verdict.ok) == ("killed", "test_x.py::test_2", True)


def test_render_flags_a_kill_outside_the_expected_family() -> None:
    inside = judge(BROKEN_ENTRY, _result("fail", exitstatus=1), 1.0)
    outside = judge(Entry("Odd", "m:Odd", faithful=False, family="y"), _result("fail"), 1.0)
    lines = render([inside, outside]).splitlines()
    assert lines[0] == "sensitivity: 2 of 2 broken backends killed"
    assert "outside its family" not in lines[3]
    assert lines[4].startswith("KILLED    Odd [family y] by test_x.py::test_0 (outside its family")


def test_a_kill_the_faithful_wrapper_shares_is_not_credited() -> None:
    bad = Entry("Bad", "m:Bad", faithful=False, family="x", base="b")
    other = Entry("Other", "m:Other", faithful=False, family="x", base="c")
    good = Entry("Good", "m:Good", faithful=True, base="b")
    verdicts = discount_shared(
        [
            judge(bad, _result("pass", "fail", exitstatus=1), 1.0),
            judge(other, _result("pass", "fail", exitstatus=1), 1.0),
            judge(good, _result("pass", "fail", exitstatus=1), 1.0),
        ]
    )
    assert [v.outcome for v in verdicts] == ["error", "killed", "failed"]
    assert "faithful b wrapper fails too" in verdicts[0].reason
    first = render(verdicts).splitlines()[0]
    assert first == "sensitivity: 1 of 2 broken backends killed; not judged (errors): Bad"


def test_a_broken_backend_that_passes_survives() -> None:
    verdict = judge(BROKEN_ENTRY, _result("pass", "skip", "xfail"), 1.0)
    assert (verdict.outcome, verdict.ok) == ("survived", False)


@pytest.mark.parametrize(
    "result",
    [
        _result(error="cannot import module 'm'"),
        _result("error", exitstatus=2),
        _result("pass", exitstatus=2),
    ],
    ids=["no-run", "collection-error", "interrupted"],
)
def test_a_run_that_did_not_judge_the_backend_is_an_error_not_a_kill(
    result: BackendResult,
) -> None:
    for entry in (BROKEN_ENTRY, FAITHFUL_ENTRY):
        verdict = judge(entry, result, 1.0)
        assert not verdict.ok
        assert verdict.outcome in ("error", "failed")


def test_a_faithful_wrapper_must_pass() -> None:
    assert judge(FAITHFUL_ENTRY, _result("pass", "skip"), 1.0).ok
    failed = judge(FAITHFUL_ENTRY, _result("pass", "fail", exitstatus=1), 1.0)
    assert (failed.outcome, failed.test, failed.ok) == ("failed", "test_x.py::test_1", False)


# --- the runner, end to end on a tiny suite -------------------------------------------------------

_BACKENDS = """
from spec_tests.selftest.wrap import LoadPlannerProxy, Wrapped, WrappedReader


class _Zeroing(LoadPlannerProxy):
    def commit_tensor(self, read_item, tensor):
        tensor.detach().view(-1).view(__import__("torch").uint8).zero_()
        self.inner.commit_tensor(read_item, tensor)


class _ZeroReader(WrappedReader):
    def load_planner(self, planner):
        return _Zeroing(planner)


class Zeroes(Wrapped):
    '''Loads zeros. Family: tiny.'''

    reader = _ZeroReader
    family = "tiny"


class Harmless(Wrapped):
    '''Breaks nothing: a survivor. Family: tiny.'''

    family = "tiny"


class Faithful(Wrapped):
    '''reference, unchanged.'''
"""

_SUITE = """
import torch

from spec_tests.properties.checks import roundtrip


def test_roundtrip(dcp_backend, dcp_location):
    roundtrip(dcp_backend, dcp_location(), {"t": torch.arange(1, 7, dtype=torch.float32)})
"""


def test_runner_counts_kills_survivors_and_faithful_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tinybackends.py").write_text(textwrap.dedent(_BACKENDS), encoding="utf-8")
    suite = tmp_path / "suite" / "test_tiny.py"
    suite.parent.mkdir()
    suite.write_text(_SUITE, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    entries = [
        Entry("Zeroes", "tinybackends:Zeroes", faithful=False, family="tiny"),
        Entry("Harmless", "tinybackends:Harmless", faithful=False, family="tiny"),
        Entry("Faithful", "tinybackends:Faithful", faithful=True, slow=True),
    ]
    verdicts = run(entries, tmp_path / "out", jobs=2, suite=str(suite))
    assert [v.outcome for v in verdicts] == ["killed", "survived", "passed"]
    assert verdicts[0].test.endswith("test_tiny.py::test_roundtrip")
    text = render(verdicts)
    assert text.splitlines()[0] == "sensitivity: 1 of 2 broken backends killed; survivors: Harmless"
    assert text.splitlines()[1] == "faithful wrappers: 1 of 1 pass"
    assert (tmp_path / "out" / "selftest.json").is_file()
    assert not all(v.ok for v in verdicts)
    # progress: each entry's start and end, numbered and timed, as they happen (stderr)
    progress = capsys.readouterr().err.splitlines()
    for name, outcome in (("Zeroes", "KILLED"), ("Harmless", "SURVIVED"), ("Faithful", "PASSED")):
        assert any(line.endswith(f"start {name}") for line in progress), progress
        assert any("] +" in line and f"{outcome} {name} (" in line for line in progress)


def test_entries_name_importable_specs() -> None:
    entries = entries_of([writers.NaNCanonicalized, readers.SkipsChecksums], faithful=False)
    assert [e.spec for e in entries] == [
        "spec_tests.selftest.writers:NaNCanonicalized",
        "spec_tests.selftest.readers:SkipsChecksums",
    ]
    assert not any(e.slow for e in entries)
    assert [e.slow for e in entries_of(FAITHFUL, faithful=True)] == [False, True]


# --- probe ----------------------------------------------------------------------------------------


def _held(backend: Backend, tmp_path: Path, only: set[str] | None = None) -> set[str]:
    return {t.capability for t in probe_claims(backend, str(tmp_path), only) if t.holds}


def test_probe_of_reference_claims_what_reference_claims(tmp_path: Path) -> None:
    claimed = builtin("reference").capabilities
    assert claimed is not None
    assert _held(builtin("reference"), tmp_path) == claimed - set(NOT_PROBED)


@pytest.mark.parametrize(
    ("broken", "capability"),
    [
        (writers.Complex128AsComplex64, "dtype:complex128"),
        (writers.DropsSecondChunk, "multi-chunk"),
        (writers.DropsNonTensorEntries, "bytes"),
        (writers.NaNCanonicalized, "dtype:float32"),
        (readers.ReadsFromChunkOrigin, "reshard"),
        (readers.DropsPlannerData, "metadata-exact"),
        (readers.SkipsChecksums, "integrity"),
        (protocol.KeepsOldEntries, "overwrite"),
    ],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_probe_of_a_broken_backend_drops_the_broken_capability(
    tmp_path: Path, broken: type[Wrapped], capability: str
) -> None:
    assert _held(broken(), tmp_path, {capability, "dtype:int64"}) == {"dtype:int64"}


def test_probe_of_dcp_impl_fs_finds_integrity(tmp_path: Path) -> None:
    assert _held(builtin("dcp_impl-fs"), tmp_path, {"integrity"}) == {"integrity"}


def test_selftest_command_refuses_an_unknown_entry(capsys: pytest.CaptureFixture[str]) -> None:
    from spec_tests.cli.main import main

    assert main(["selftest", "--backend", "NoSuchBackend"]) == 2
    assert "NoSuchBackend" in capsys.readouterr().err
