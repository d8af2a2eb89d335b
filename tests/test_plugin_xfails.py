"""The plugin's expected failures (TOML entries, includes, catch-alls, torch releases, the
built-in files), exercised on tiny fake suites run by pytester."""

from __future__ import annotations

import textwrap

import pytest
from _plugin import fake_suite, xfails_file

# pytester's in-process runs restore sys.modules afterwards, and torch cannot be imported
# twice in one process: import everything the inner runs load here, once.
import spec_tests.contract.reference  # noqa: F401  (imports torch)
from spec_tests import plugin

pytest_plugins = ["pytester"]


@pytest.fixture
def fake(pytester: pytest.Pytester) -> pytest.Pytester:
    return fake_suite(pytester)


def test_xfail_entries_apply_and_stale_ones_warn(fake: pytest.Pytester) -> None:
    path = xfails_file(
        fake,
        """
        [[xfail]]
        test = "test_fake.py::test_broken"
        reason = "known breakage"
        issue = "org/repo#1"

        [[xfail]]
        test = "test_fake.py::test_param[2]"
        reason = "only the second"

        [[xfail]]
        test = "test_fake.py::test_gone"
        reason = "fixed long ago"
        """,
    )
    result = fake.runpytest(f"--dcp-xfails-file={path}", "-rx", "-k", "broken or param")
    result.assert_outcomes(passed=1, xfailed=2)
    result.stdout.fnmatch_lines(
        [
            "*xfail entry matches nothing: test_fake.py::test_gone*",
            "*known breakage (org/repo#1)*",
        ]
    )
    assert result.ret == pytest.ExitCode.OK
    strict = fake.runpytest(f"--dcp-xfails-file={path}", "--dcp-strict-xfails", "-k", "broken")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED


def test_xfail_of_a_passing_test_fails_strictly_when_derandomized_and_globs_match(
    fake: pytest.Pytester,
) -> None:
    path = xfails_file(
        fake,
        """
        [[xfail]]
        test = "test_fake.py::test_param"
        reason = "all params"
        [[xfail]]
        test = "*::test_bro*"
        reason = "glob"
        """,
    )
    args = (f"--dcp-xfails-file={path}", "-k", "broken or param")
    result = fake.runpytest(*args, "--hypothesis-profile=dcp-ci")
    result.assert_outcomes(failed=1, xfailed=2)
    result.stdout.fnmatch_lines(["*XPASS(strict)*all params*"])
    # A randomized profile may miss the failing example: an unexpected pass is reported only.
    randomized = fake.runpytest(*args, "--hypothesis-profile=dcp-dev")
    randomized.assert_outcomes(xpassed=1, xfailed=2)


def test_malformed_xfails_file_is_a_usage_error(fake: pytest.Pytester) -> None:
    path = xfails_file(fake, '[[xfail]]\ntest = "test_fake.py::test_broken"\n')
    result = fake.runpytest(f"--dcp-xfails-file={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*expected string keys test, reason*"])


def test_an_xfails_file_includes_its_base_and_may_restate_an_entry(fake: pytest.Pytester) -> None:
    (fake.path / "base.toml").write_text(
        textwrap.dedent(
            """
            [[xfail]]
            test = "test_fake.py::test_broken"
            reason = "base: any failure"
            [[xfail]]
            test = "test_fake.py::test_param[2]"
            reason = "base: a message this configuration does not give"
            match = 'never said'
            """
        ),
        encoding="utf-8",
    )
    path = xfails_file(
        fake,
        """
        include = ["base.toml"]
        [[xfail]]
        test = "test_fake.py::test_param[2]"
        reason = "restated: the configuration's own entry matches first"
        match = 'assert 2 == 1'
        """,
    )
    result = fake.runpytest(f"--dcp-xfails-file={path}", "-k", "broken or param")
    result.assert_outcomes(passed=1, xfailed=2)
    # The restated base entry names a collected test: shadowed, not stale.
    result.stdout.no_fnmatch_line("*xfail entry matches nothing*")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('include = ["xfails.toml"]\n', "*include 'xfails.toml' includes itself*"),
        ('include = "base.toml"\n', "*optional include (a list of file names)*"),
        ('includes = ["base.toml"]\n', "*got the keys ?'includes'?*"),
    ],
)
def test_a_bad_include_is_a_usage_error(fake: pytest.Pytester, body: str, message: str) -> None:
    result = fake.runpytest(f"--dcp-xfails-file={xfails_file(fake, body)}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_catch_all_entry_judges_only_the_tests_no_entry_names(fake: pytest.Pytester) -> None:
    path = xfails_file(
        fake,
        """
        [[xfail]]
        test = "*"
        reason = "any test may meet this bug"
        match = 'broken on purpose'
        strict = false
        [[xfail]]
        test = "test_fake.py::test_param[2]"
        reason = "named: judged by its own entry"
        match = 'assert 2 == 1'
        """,
    )
    result = fake.runpytest(f"--dcp-xfails-file={path}", "-k", "broken or param")
    # test_broken by the catch-all, test_param[2] by its own entry (the catch-all's match would
    # call its failure unexpected), test_param[1] passes (a non-strict entry's unexpected pass).
    result.assert_outcomes(xfailed=2, xpassed=1)


def test_builtin_xfails_apply_only_to_the_suite_package(
    fake: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    xfails = fake.mkdir("xfails")
    (xfails / "reference.toml").write_text(
        '[[xfail]]\ntest = "test_fake.py::test_broken"\nreason = "r"\n'
    )
    monkeypatch.setattr(plugin, "XFAILS_DIR", xfails)
    fake.runpytest("--dcp-backend=reference", "-k", "broken").assert_outcomes(failed=1)
    monkeypatch.setattr(plugin, "PACKAGE_DIR", fake.path)  # now test_fake.py is "in the suite"
    fake.runpytest("--dcp-backend=reference", "-k", "broken").assert_outcomes(xfailed=1)


def test_expected_failures_are_not_shrunk(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_hyp="""
        from hypothesis import given, settings, strategies as st

        CALLS = []

        @settings(max_examples=200, database=None)
        @given(st.lists(st.integers(0, 1000), min_size=3))
        def test_big_sum(xs):
            CALLS.append(sum(xs) > 500)
            assert sum(xs) <= 500

        def test_calls_after_first_failure():
            first = CALLS.index(True)
            # the failing example, then at most hypothesis' final replay of it
            assert len(CALLS) - first <= 2, CALLS
        """
    )
    path = xfails_file(
        pytester, '[[xfail]]\ntest = "test_hyp.py::test_big_sum"\nreason = "known"\n'
    )
    result = pytester.runpytest(f"--dcp-xfails-file={path}")
    result.assert_outcomes(xfailed=1, passed=1)


def test_xfail_entry_naming_its_error_accepts_only_that_error(fake: pytest.Pytester) -> None:
    path = xfails_file(
        fake,
        """
        [[xfail]]
        test = "test_fake.py::test_broken"
        reason = "known"
        raises = "AssertionError"
        match = 'broken on purpose'

        [[xfail]]
        test = "test_fake.py::test_param[2]"
        reason = "a different bug than the one that happens"
        raises = "ValueError"
        """,
    )
    result = fake.runpytest(f"--dcp-xfails-file={path}", "-k", "broken or param")
    result.assert_outcomes(passed=1, xfailed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*failed differently: expected ValueError in the exception chain*"]
    )


def test_xfail_match_is_searched_in_the_whole_chain(fake: pytest.Pytester) -> None:
    fake.makepyfile(
        test_chained="""
        def test_wrapped():
            try:
                raise KeyError("deep cause")
            except KeyError as err:
                raise RuntimeError("outer") from err
        """
    )
    path = xfails_file(
        fake,
        """
        [[xfail]]
        test = "test_chained.py::test_wrapped"
        reason = "r"
        raises = "KeyError"
        match = 'deep cause'
        """,
    )
    fake.runpytest(f"--dcp-xfails-file={path}", "test_chained.py").assert_outcomes(xfailed=1)


def test_xfail_with_a_bad_regex_is_a_usage_error(fake: pytest.Pytester) -> None:
    path = xfails_file(fake, '[[xfail]]\ntest = "t"\nreason = "r"\nmatch = "("\n')
    result = fake.runpytest(f"--dcp-xfails-file={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is not a regex*"])


def test_every_builtin_xfail_entry_names_its_error() -> None:
    for path in sorted(plugin.XFAILS_DIR.glob("*.toml")):
        for entry in plugin.read_xfails(path):
            assert entry.raises, f"{path.name}: {entry.test} names no exception type"
            assert entry.match, f"{path.name}: {entry.test} names no message regex"


def test_xfail_entry_not_strict_reports_an_unexpected_pass(fake: pytest.Pytester) -> None:
    path = xfails_file(
        fake,
        """
        [[xfail]]
        test = "test_fake.py::test_param[1]"
        reason = "only some draws hit it"
        raises = "AssertionError"
        match = 'x'
        strict = false
        """,
    )
    result = fake.runpytest(
        f"--dcp-xfails-file={path}", "--hypothesis-profile=dcp-ci", "-k", "param"
    )
    result.assert_outcomes(xpassed=1, failed=1)


def test_xfail_entry_applies_only_to_the_torch_releases_it_names(fake: pytest.Pytester) -> None:
    # test_broken's entry is for releases long gone: it fails plainly. test_param[1] passes, and
    # its entry (a bug "fixed" before this torch) is not listed here: a plain pass, no XPASS.
    path = xfails_file(
        fake,
        """
        [[xfail]]
        test = "test_fake.py::test_broken"
        reason = "only old torch"
        torch = "<2.0"

        [[xfail]]
        test = "test_fake.py::test_param[1]"
        reason = "fixed since 2.0"
        torch = "<2.0"

        [[xfail]]
        test = "test_fake.py::test_param[2]"
        reason = "every torch since 2.0"
        torch = ">=2.0"
        """,
    )
    args = (f"--dcp-xfails-file={path}", "--hypothesis-profile=dcp-ci", "-k", "broken or param")
    fake.runpytest(*args).assert_outcomes(passed=1, failed=1, xfailed=1)


def test_torch_specifier_matches_local_builds_and_nightlies() -> None:
    from spec_tests.plugin.xfails import XfailEntry

    entry = XfailEntry(test="t", reason="r", source="s", torch=">=2.11,<2.15")
    assert entry.applies_to("2.13.0+cpu")
    assert entry.applies_to("2.15.0.dev20260101") is False
    assert entry.applies_to("2.15.0") is False
    assert XfailEntry(test="t", reason="r", source="s").applies_to("1.0")


def test_xfail_with_a_bad_torch_specifier_is_a_usage_error(fake: pytest.Pytester) -> None:
    path = xfails_file(fake, '[[xfail]]\ntest = "t"\nreason = "r"\ntorch = "2.11 or newer"\n')
    result = fake.runpytest(f"--dcp-xfails-file={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*torch '2.11 or newer': expected a PEP 440 specifier set*"])
