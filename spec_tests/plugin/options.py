"""The suite's command-line options (the ``dcp`` group of ``pytest --help``)."""

from __future__ import annotations

import pytest

from spec_tests.plugin.summary import DEFAULT_MAXFAIL

__all__ = ["DEFAULT_BACKEND", "ENV_VAR", "add_options"]

ENV_VAR = "DCP_SPEC_BACKEND"
DEFAULT_BACKEND = "reference"


def add_options(parser: pytest.Parser) -> None:
    """Register the ``--dcp-*`` options."""
    group = parser.getgroup("dcp", "DCP storage-backend conformance")
    group.addoption(
        "--dcp-backend",
        default=None,
        metavar="SPEC",
        help=f"backend under test: a built-in name or module:attr (env {ENV_VAR}; "
        f"default {DEFAULT_BACKEND})",
    )
    group.addoption(
        "--dcp-xfails-file",
        action="append",
        default=[],
        metavar="PATH",
        help="TOML file of [[xfail]] entries (test, reason, issue) for your backend; repeatable",
    )
    group.addoption(
        "--dcp-xfails",
        action="append",
        default=[],
        metavar="NAME",
        help="a built-in expected-failure list (spec_tests/xfails/NAME.toml), e.g. torch-fs for "
        "a backend built on torch's FileSystemWriter/Reader; repeatable",
    )
    group.addoption(
        "--dcp-maxfail",
        type=int,
        default=None,
        metavar="N",
        help=f"stop the suite after N failed properties (default {DEFAULT_MAXFAIL} unless -x, "
        "--maxfail or --dcp-report; 0: never)",
    )
    group.addoption(
        "--dcp-strict-xfails",
        action="store_true",
        help="fail the run when an expected-failure entry matches no collected test",
    )
    group.addoption(
        "--dcp-root",
        default=None,
        metavar="URL",
        help="create checkpoint locations under URL: a local directory or an fsspec URL such as "
        "s3://bucket/prefix (default: a temporary directory)",
    )
    group.addoption(
        "--dcp-report",
        default=None,
        metavar="PATH",
        help="write a JSON file with every test's outcome (used by python -m spec_tests matrix)",
    )
