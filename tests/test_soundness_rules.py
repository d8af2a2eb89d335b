"""The suite's soundness rules (docs/conformance.md section 3), each against a backend that
breaks only that rule: committed means loadable, refused means raised, named inputs are always
tried, one expected-failure mechanism, and the probe judges like the suite."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner
from torch.futures import Future

from spec_tests.backends import Backend, builtin
from spec_tests.cli.probe import probe_claims
from spec_tests.contract.verdicts import ContractViolation
from spec_tests.properties.roundtrip import RoundTripProperties
from spec_tests.properties.unclaimed import LOAD_SIDE, Attempt
from spec_tests.selftest import readers, rules
from spec_tests.selftest.catalogue import FaithfulFS
from spec_tests.selftest.wrap import Wrapped, WrappedReader
from spec_tests.strategies import NamedCases

pytest_plugins = ["pytester"]


def _suite(backend: str, module: str, keyword: str) -> subprocess.CompletedProcess[str]:
    """One suite module on ``backend`` under dcp-ci (a subprocess: the plugin's own settings)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", f"spec_tests.{module}", "-p", "no:randomly",
         f"--dcp-backend={backend}", "--hypothesis-profile=dcp-ci", "-k", keyword, "-q"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


# --- committed means loadable ---------------------------------------------------------------------


def _float8_attempt(capability: str) -> Attempt:
    value = torch.arange(8, dtype=torch.uint8).view(torch.float8_e8m0fnu)
    companion = {"companion": torch.arange(4, dtype=torch.float32)}
    return Attempt(capability, ({"t": value},), {"t": value}, ({"t": None},), companion)


def test_a_save_side_capability_failing_at_load_is_committed_but_unloadable() -> None:
    backend = rules.SavesDtypesItCannotLoad()
    with (
        tempfile.TemporaryDirectory() as location,
        pytest.raises(ContractViolation, match="committed but unloadable"),
    ):
        _float8_attempt("dtype:float8_e8m0fnu").run(backend, location)


def test_only_load_side_capabilities_may_refuse_at_load() -> None:
    assert frozenset({"reshard"}) == LOAD_SIDE
    refused = []

    @settings(max_examples=1, database=None)
    @given(st.just(None))
    def attempt(_: None) -> None:  # hypothesis' note() needs a running test
        with tempfile.TemporaryDirectory() as location:
            refused.append(
                _float8_attempt("reshard").run(rules.SavesDtypesItCannotLoad(), location)
            )

    attempt()
    assert refused == [True]


@pytest.mark.parametrize("case", ["nothing", "only objects", "only empty tensors"])
def test_an_empty_save_that_commits_nothing_is_caught(tmp_path: Path, case: str) -> None:
    counter = iter(range(100))

    def location() -> str:
        made = tmp_path / str(next(counter))
        made.mkdir()
        return str(made)

    empty = RoundTripProperties().test_checkpoints_without_tensor_bytes
    empty(FaithfulFS(), location, case)
    if case == "nothing":  # the other cases write items, so this writer commits them
        with pytest.raises(FileNotFoundError, match="expected a committed checkpoint"):
            empty(rules.CommitsNothingForNoItems(), location, case)


def test_unclaimed_dtypes_property_kills_a_backend_that_cannot_load_what_it_saved() -> None:
    spec = "spec_tests.selftest.rules:SavesDtypesItCannotLoad"
    run = _suite(spec, "test_unclaimed", "dtypes")
    assert run.returncode == 1, run.stdout[-2000:]
    assert "committed but unloadable" in run.stdout


# --- refused means raised -------------------------------------------------------------------------


def test_hostile_entry_loaded_as_none_is_a_violation() -> None:
    run = _suite("spec_tests.selftest.rules:LoadsUnsafeEntriesAsNone", "test_hostile", "bytes")
    assert run.returncode == 1, run.stdout[-2000:]
    assert "loaded as a stand-in ({'extra': None})" in run.stdout


# --- named inputs are always tried ----------------------------------------------------------------


def test_named_cases_run_in_every_run_even_with_no_draws() -> None:
    seen: list[object] = []
    cases: NamedCases[object] = NamedCases({"url": "s3://bucket/key", "none": None, "empty": ""})

    @settings(max_examples=1, database=None, derandomize=True)
    @cases.examples("value")
    @given(value=cases.or_drawn(st.integers()))
    def check(value: object) -> None:
        seen.append(value)

    check()
    assert seen[:3] == ["s3://bucket/key", None, ""]


def test_named_cases_refuse_an_empty_table() -> None:
    with pytest.raises(ValueError, match="at least one case"):
        NamedCases({})


def test_a_named_checkpoint_id_is_tried_under_dcp_ci() -> None:
    run = _suite("spec_tests.selftest.rules:ValidateRaisesOnURLs", "test_contract", "validate")
    assert run.returncode == 1, run.stdout[-2000:]
    assert "this backend takes local paths" in run.stdout


# --- one expected-failure mechanism ---------------------------------------------------------------

_KIT = """
import dataclasses
import pytest
from spec_tests.backends import TorchFS
from spec_tests.kit import BackendTests

_FS = TorchFS()
_CAPS = frozenset(c for c in _FS.capabilities if not c.startswith("dtype:bits"))

class TestTorchFS(BackendTests):
    xfails = {{"test_validate_checkpoint_id_is_total": {entry}}}

    @pytest.fixture(scope="class")
    def dcp_backend(self):
        return dataclasses.replace(_FS, capabilities=_CAPS)
"""


def _kit_run(pytester: pytest.Pytester, entry: str) -> pytest.RunResult:
    pytester.makepyfile(test_kit=_KIT.format(entry=entry))
    return pytester.runpytest_subprocess(
        "-p", "no:randomly", "-k", "validate_checkpoint_id", "--hypothesis-profile=dcp-ci"
    )


def test_kit_xfail_naming_its_error_is_expected(pytester: pytest.Pytester) -> None:
    entry = '{"reason": "torch bug", "raises": "TypeError", "match": "os.PathLike"}'
    _kit_run(pytester, entry).assert_outcomes(xfailed=1)


def test_kit_xfail_with_the_wrong_error_is_a_real_failure(pytester: pytest.Pytester) -> None:
    result = _kit_run(pytester, '{"reason": "torch bug", "raises": "KeyError"}')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*but it failed differently: expected KeyError*"])


def test_kit_xfail_with_an_unknown_key_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = _kit_run(pytester, '{"reason": "torch bug", "raise": "TypeError"}')
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*TestTorchFS.xfails*expected string keys*"])


# --- the probe judges like the suite --------------------------------------------------------------


class _Swallowing(WrappedReader):
    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        with contextlib.suppress(Exception):  # the checksum error too
            self.inner.read_data(plan, planner).wait()
        done: Future[None] = Future()
        done.set_result(None)  # the targets stay uncommitted: the harness's verdict
        return done


class _SwallowsOverFS(Wrapped):
    """dcp_impl-fs with a reader that swallows its own read errors (checksums included)."""

    base = "dcp_impl-fs"
    reader = _Swallowing


def _holds(backend: Backend, capability: str, tmp_path: Path) -> bool:
    (trial,) = probe_claims(backend, str(tmp_path), {capability})
    return trial.holds


def test_probe_never_takes_a_contract_violation_for_detected_damage(tmp_path: Path) -> None:
    assert _holds(builtin("dcp_impl-fs"), "integrity", tmp_path)
    assert not _holds(_SwallowsOverFS(), "integrity", tmp_path)


def test_probe_safe_load_needs_a_raise(tmp_path: Path) -> None:
    assert _holds(builtin("dcp_impl-fs"), "safe-load", tmp_path)
    assert not _holds(rules.LoadsUnsafeEntriesAsNone(), "safe-load", tmp_path)
    assert not _holds(readers.SwallowsReadErrors(), "safe-load", tmp_path)


def test_probe_imports_no_private_helper_of_a_property() -> None:
    source = Path(sys.modules[probe_claims.__module__].__file__ or "").read_text(encoding="utf-8")
    imports = [line for line in source.splitlines() if line.startswith(("from ", "import "))]
    private = [line for line in imports if "properties." in line and " import _" in line]
    assert private == [], textwrap.dedent("\n".join(private))
