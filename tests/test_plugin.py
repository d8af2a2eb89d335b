"""The conformance plugin, exercised on tiny fake suites run by pytester."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _plugin import FAKE_BACKEND, fake_suite, xfails_file

# pytester's in-process runs restore sys.modules afterwards, and torch cannot be imported
# twice in one process: import everything the inner runs load here, once.
import spec_tests.contract.reference  # noqa: F401  (imports torch)
from spec_tests import plugin

pytest_plugins = ["pytester"]


@pytest.fixture
def fake(pytester: pytest.Pytester) -> pytest.Pytester:
    return fake_suite(pytester)


def test_capability_skips_name_the_missing_capabilities(fake: pytest.Pytester) -> None:
    result = fake.runpytest("--dcp-backend=fakebackend:BACKEND", "-rs", "-k", "claimed")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*backend 'fake' does not claim capabilities 'multi-rank', 'reshard'*"]
    )


def test_single_missing_capability_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.dcp_requires("integrity")
        def test_x(dcp_backend):
            pass
        """
    )
    result = pytester.runpytest("--dcp-backend=reference", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*backend 'reference' does not claim capability 'integrity'*"])


def test_unknown_capability_in_marker_is_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.dcp_requires("multi_rank")
        def test_x(dcp_backend):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*capability 'multi_rank' is unknown*"])


def test_default_backend_is_reference_and_env_var_selects(
    fake: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.makepyfile(
        test_which="""
        def test_which(dcp_backend, dcp_backend_spec):
            print("BACKEND", dcp_backend.name, dcp_backend_spec)
        """
    )
    monkeypatch.delenv(plugin.ENV_VAR, raising=False)
    fake.runpytest("test_which.py", "-s").stdout.fnmatch_lines(["*BACKEND reference reference"])
    monkeypatch.setenv(plugin.ENV_VAR, "fakebackend:BACKEND")
    fake.runpytest("test_which.py", "-s").stdout.fnmatch_lines(
        ["*BACKEND fake fakebackend:BACKEND"]
    )
    # The option wins over the environment.
    result = fake.runpytest("test_which.py", "-s", "--dcp-backend=torch-fs")
    result.stdout.fnmatch_lines(["*BACKEND torch-fs torch-fs"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "*'nope' is not a built-in: expected one of dcp_impl-fs, dcp_impl-fs-threads*"),
        ("no_such_module_xyz:B", "*cannot import module 'no_such_module_xyz'*"),
        ("fakebackend:MISSING", "*has no attribute 'MISSING'*"),
        ("fakebackend:NOT_A_BACKEND", "*lacks Backend member(s) make_writer, make_reader*"),
        ("fakebackend:Unbuildable", "*make_writer(*) failed: ModuleNotFoundError: no mystore*"),
        ("fakebackend:WrongType", "*make_reader() returned int, expected a StorageReader*"),
    ],
)
def test_bad_spec_is_a_usage_error(fake: pytest.Pytester, spec: str, message: str) -> None:
    (fake.path / "fakebackend.py").write_text(
        textwrap.dedent(FAKE_BACKEND)
        + "\nclass NOT_A_BACKEND:\n    name = 'x'\n    capabilities = None\n"
        + "\nclass Unbuildable(Fake):\n"
        + "    def make_writer(self, path): raise ModuleNotFoundError('no mystore')\n"
        + "\nclass WrongType(Fake):\n    def make_reader(self, path): return 3\n"
    )
    result = fake.runpytest(f"--dcp-backend={spec}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_header_names_backend_and_capabilities(fake: pytest.Pytester) -> None:
    result = fake.runpytest("--dcp-backend=fakebackend:BACKEND", "--co")
    result.stdout.fnmatch_lines(
        [
            "dcp backend: fake (spec 'fakebackend:BACKEND'); claims bytes; not multi-rank, *",
            "dcp dtypes: 1 of *: float32",
        ]
    )


def test_no_header_when_the_suite_is_not_used(fake: pytest.Pytester) -> None:
    result = fake.runpytest("--co")
    assert "dcp backend" not in result.stdout.str()


def test_report_records_every_outcome(fake: pytest.Pytester) -> None:
    path = xfails_file(fake, '[[xfail]]\ntest = "test_fake.py::test_broken"\nreason = "known"\n')
    report = fake.path / "out" / "report.json"
    fake.runpytest(
        "--dcp-backend=fakebackend:BACKEND", f"--dcp-xfails-file={path}", f"--dcp-report={report}"
    )
    data = json.loads(report.read_text())
    assert data["backend"] == "fake"
    assert data["exitstatus"] == 1
    outcomes = {t["nodeid"]: (t["property"], t["outcome"], t["reason"]) for t in data["tests"]}
    assert outcomes == {
        "test_fake.py::test_claimed": ("fake::test_claimed", "pass", ""),
        "test_fake.py::test_unclaimed": (
            "fake::test_unclaimed",
            "skip",
            "backend 'fake' does not claim capabilities 'multi-rank', 'reshard'",
        ),
        "test_fake.py::test_broken": ("fake::test_broken", "xfail", "known"),
        "test_fake.py::test_param[1]": ("fake::test_param", "pass", ""),
        "test_fake.py::test_param[2]": ("fake::test_param", "fail", "assert 2 == 1"),
    }


def test_dcp_location_gives_fresh_empty_directories(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os

        SEEN = []

        def test_fresh(dcp_location):
            a, b = dcp_location(), dcp_location()
            assert a != b and os.listdir(a) == [] and os.path.isdir(b)
            open(os.path.join(a, "f"), "w").close()
            SEEN.extend([a, b])

        def test_cleaned():
            assert SEEN and not any(os.path.exists(p) for p in SEEN)
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)


def test_dcp_root_option_places_locations(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(
        f"""
        def test_under_root(dcp_location):
            assert dcp_location().startswith({str(tmp_path)!r})
        """
    )
    pytester.runpytest(f"--dcp-root={tmp_path}").assert_outcomes(passed=1)
    assert list(tmp_path.iterdir()) == []  # the session directory is removed at the end


def test_dcp_root_url_gives_fresh_prefixes_and_removes_them(pytester: pytest.Pytester) -> None:
    # fsspec's in-memory file system is a URL root without a server; the inner run is
    # in-process, so its store is this process's and what is left there can be checked.
    fsspec = pytest.importorskip("fsspec")
    pytester.makepyfile(
        """
        import fsspec

        def test_under_root(dcp_location):
            a, b = dcp_location(), dcp_location()
            assert a.startswith("memory://suite/dcp-session-") and a != b
            fs = fsspec.filesystem("memory")
            assert fs.find(a) == []
            fs.pipe(a + "/data.bin", b"x")
        """
    )
    memory = fsspec.filesystem("memory")
    memory.pipe("memory://suite/keep.txt", b"mine")
    pytester.runpytest("--dcp-root=memory://suite").assert_outcomes(passed=1)
    assert memory.find("memory://suite") == ["/suite/keep.txt"]  # only what was there before
    memory.rm("memory://suite", recursive=True)


def test_url_only_backend_is_probed_under_a_url_root(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        urlonly="""
        from dataclasses import dataclass
        from spec_tests.contract.reference import ReferenceReader, ReferenceWriter

        def _url(path):
            if "://" not in path:
                raise ValueError(f"expected a URL, got {path!r}")
            return path

        @dataclass(frozen=True)
        class UrlOnly:
            name: str = "url-only"
            capabilities: frozenset = frozenset({"dtype:float32"})
            def make_writer(self, path): return ReferenceWriter(_url(path))
            def make_reader(self, path): return ReferenceReader(_url(path))
        """,
        test_url="""
        def test_location(dcp_backend, dcp_location):
            assert dcp_location().startswith("memory://probe-root/")
        """,
    )
    pytester.syspathinsert()
    spec = "--dcp-backend=urlonly:UrlOnly"
    pytester.runpytest(spec, "--dcp-root=memory://probe-root").assert_outcomes(passed=1)
    refused = pytester.runpytest(spec)
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*make_writer(*) failed: ValueError: expected a URL*"])


def test_hypothesis_profiles_are_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from hypothesis import settings

        def test_profile():
            assert settings.get_current_profile_name() == "dcp-ci"
            assert settings.default.derandomize and settings.default.deadline is None
        """
    )
    pytester.runpytest("--hypothesis-profile=dcp-ci").assert_outcomes(passed=1)


def test_dev_profile_is_the_suite_default(fake: pytest.Pytester) -> None:
    fake.makepyfile(
        test_prof="""
        from hypothesis import settings

        def test_profile():
            assert settings.get_current_profile_name() == "dcp-dev"
        """
    )
    fake.runpytest("test_prof.py", "--dcp-backend=reference").assert_outcomes(passed=1)


def test_importing_the_plugin_does_not_import_torch() -> None:
    code = "import sys, spec_tests.plugin; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_kit_style_class_backend_gets_its_own_capability_skips(fake: pytest.Pytester) -> None:
    fake.makepyfile(
        test_kit="""
        import pytest
        from fakebackend import Fake

        class TestMine:
            @pytest.fixture(scope="class")
            def dcp_backend(self):
                return Fake(name="mine")

            @pytest.mark.dcp_requires("reshard")
            def test_reshard(self, dcp_backend):
                pass

            @pytest.mark.dcp_requires("bytes")
            def test_bytes(self, dcp_backend):
                assert dcp_backend.name == "mine"
        """
    )
    result = fake.runpytest("test_kit.py", "--dcp-backend=reference", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*backend 'mine' does not claim capability 'reshard'*"])


def test_running_a_suite_path_selects_the_suite_defaults(
    fake: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(plugin.ENV_VAR, raising=False)
    monkeypatch.setattr(plugin, "PACKAGE_DIR", fake.path)  # "this directory is spec_tests"
    result = fake.runpytest(str(fake.path / "test_fake.py"), "--co")
    result.stdout.fnmatch_lines(["dcp backend: reference (spec 'reference'); *"])


def test_suite_properties_take_the_profile_loaded_when_they_run() -> None:
    # @given captures the default settings at import; the plugin rebinds them at setup, so a
    # property imported before --hypothesis-profile is loaded still runs under that profile.
    from types import SimpleNamespace

    from hypothesis import Phase, settings

    from spec_tests.plugin.profiles import bind_settings, register_profiles
    from spec_tests.properties.faults import FaultProperties

    previous = register_profiles(load_default=False)
    try:
        settings.load_profile("dcp-ci")
        test = FaultProperties.test_killed_save_keeps_previous
        bind_settings(SimpleNamespace(obj=test), shrink=False)  # type: ignore[arg-type]
        bound = test._hypothesis_internal_use_settings  # type: ignore[attr-defined]
        assert bound.derandomize
        assert bound.max_examples == 8  # its few(8)
        assert Phase.shrink not in bound.phases
        bind_settings(SimpleNamespace(obj=test), shrink=True)  # type: ignore[arg-type]
        assert Phase.shrink in test._hypothesis_internal_use_settings.phases  # type: ignore[attr-defined]
    finally:
        settings.load_profile(previous)
