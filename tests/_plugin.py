"""The fake suite and backend the plugin's tests run through pytester, shared by
test_plugin.py and test_plugin_xfails.py."""

from __future__ import annotations

import textwrap

import pytest

FAKE_BACKEND = """
    from dataclasses import dataclass
    from spec_tests.contract.reference import ReferenceReader, ReferenceWriter

    @dataclass(frozen=True)
    class Fake:
        name: str = "fake"
        capabilities: frozenset = frozenset({"bytes", "dtype:float32"})
        def make_writer(self, path): return ReferenceWriter(path)
        def make_reader(self, path): return ReferenceReader(path)

    BACKEND = Fake()
"""

FAKE_SUITE = """
    import pytest

    @pytest.mark.dcp_requires("bytes")
    def test_claimed(dcp_backend):
        assert dcp_backend.name == "fake"

    @pytest.mark.dcp_requires("bytes", "multi-rank", "reshard")
    def test_unclaimed(dcp_backend):
        raise AssertionError("must be skipped")

    def test_broken():
        raise AssertionError("broken on purpose")

    @pytest.mark.parametrize("n", [1, 2])
    def test_param(n):
        assert n == 1
"""


def fake_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """``pytester`` with the fake backend and suite written and importable."""
    pytester.makepyfile(fakebackend=FAKE_BACKEND, test_fake=FAKE_SUITE)
    pytester.syspathinsert()
    return pytester


def xfails_file(pytester: pytest.Pytester, body: str) -> str:
    """An expected-failure TOML file of ``body`` in the pytester folder; its path."""
    path = pytester.path / "xfails.toml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return str(path)
