"""Developer sessions: tests, conformance, interop, perf, lint.

Every session installs torch from the pinned CPU build first: an unpinned torch
would pull a multi-GB CUDA build.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "conformance", "interop", "lint"]
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
TORCH = "torch==2.13.0"


# The S3 test stack's versions, resolved together (see the file): without them pip's resolver
# backtracks for minutes or gives up.
S3_CONSTRAINTS = "constraints/s3.txt"
# The transformers version the interop tests were written against (see the file).
INTEROP_CONSTRAINTS = "constraints/interop.txt"


# The hypothesis release the built-in expected failures were reproduced with (see the file).
SUITE_CONSTRAINTS = "constraints/suite.txt"
# The mutation-testing tool's release (see the file).
MUTATION_CONSTRAINTS = "constraints/mutation.txt"


# The conformance matrix as CI runs it (the conformance session; compat runs it per release).
CI_MATRIX = ("python", "-m", "spec_tests", "matrix", "--profile=dcp-ci", "--jobs=2")


def _install(session: nox.Session, extras: str, torch: str = TORCH) -> None:
    # nox pipes its commands' output: unbuffered, a long run's lines arrive as they are written.
    session.env["PYTHONUNBUFFERED"] = "1"
    session.install(torch)
    session.install("-c", S3_CONSTRAINTS, "-c", SUITE_CONSTRAINTS, "-e", f".[{extras}]")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The project's own tests, then the benchmarks once each as smoke tests (tiny, not timed)."""
    _install(session, "test,perf,s3")
    # On both cores of CI's machine (pytest-xdist): about 4 minutes of the 25 CI allows.
    session.run("pytest", "tests", "--ignore=tests/interop", "-n", "2", *session.posargs)
    session.run("pytest", "perf", "--perf-size=tiny", "--benchmark-disable", "-q")


@nox.session(python=PYTHON)
def conformance(session: nox.Session) -> None:
    """The conformance matrix over every built-in backend (arguments after -- go to its pytest
    runs), then the suite's self-test against its catalogue of broken backends."""
    _install(session, "test")
    session.run(*CI_MATRIX, "--", *session.posargs)
    session.run("python", "-m", "spec_tests", "selftest")


@nox.session(python=PYTHON)
def interop(session: nox.Session) -> None:
    """The HuggingFace backend against transformers: tiny models built from configs."""
    _install(session, "test")
    # torch pinned in the same command: transformers must not bring another torch.
    session.install("-c", INTEROP_CONSTRAINTS, "transformers", TORCH)
    session.run("pytest", "tests/interop", *session.posargs)


@nox.session(python=PYTHON)
def mutation(session: nox.Session) -> None:
    """Nightly, never in CI: the suite's mutation score on dcp_impl's storage path.

    mutmut mutates dcp_impl's filesystem writer and reader, io read pipeline and metadata codec
    (pyproject.toml ``[tool.mutmut]``); each mutant is judged by the conformance suite against
    dcp_impl-fs. Every mutant by default (hours on 2 cores); arguments go to
    ``tools/mutation.py run``, e.g. ``-- --budget-s 2400 --seed 21`` for a random sample that
    fits a budget. docs/conformance.md "Mutation score" has the figure and the triage.
    """
    _install(session, "test")
    session.install("-c", MUTATION_CONSTRAINTS, "mutmut")
    session.run("python", "tools/mutation.py", "run", *session.posargs)


#: The torch releases users run, oldest first: the compat session's parameters. Only 2.13.0 has a
#: CPU build on the package index we install from; the others come as its CUDA builds (about
#: 5 GiB each with their dependencies), which run the suite on CPU all the same.
TORCH_RELEASES = ("2.11.0", "2.12.1", "2.13.0", "2.14.1", "2.15.0")
COMPAT_RUNS = "compat-results"


@nox.session(python=PYTHON)
@nox.parametrize("release", TORCH_RELEASES)
def compat(session: nox.Session, release: str) -> None:
    """The conformance matrix (dcp-ci, as CI runs it) on one torch release, in its own venv:
    ``compat-results/torch-RELEASE/``. A backend failing there does not stop the session; the
    merge (``nox -s compat_report``) says what differs from release to release."""
    _install(session, "test", torch=f"torch=={release}")
    out = f"--out={COMPAT_RUNS}/torch-{release}"
    session.run(*CI_MATRIX, out, "--", *session.posargs, success_codes=[0, 1])


# The third-party backends' releases (see the file).
THIRDPARTY_CONSTRAINTS = "constraints/thirdparty.txt"


@nox.session(python=PYTHON)
def nightly(session: nox.Session) -> None:
    """Nightly, never in CI: every long check into one results folder (``python -m nightly``).

    In order: the matrix at dcp-nightly size on every built-in, the third-party backends on the
    local S3 server, the repeat tests (multi-process properties; the suite under 20 seeds, each
    built-in's verdict under the night's 4), the self-test, the benchmarks gated on
    perf/baselines/, a 41-minute mutation sample. Writes ``nightly-results/<UTC time>/`` (or
    ``-- --out DIR``) with summary.md on top; ``-- --previous DIR`` names what regressed since
    that night; ``-- --shard K/N`` runs a share of the per-backend stages (README "Nightly").
    Exits non-zero on any unexpected failure or regression.
    """
    _install(session, "test,perf,s3")
    session.install("-c", MUTATION_CONSTRAINTS, "mutmut")
    # torch pinned in the same command: s3torchconnector must not bring another torch.
    session.install(
        "-c", THIRDPARTY_CONSTRAINTS, "-c", S3_CONSTRAINTS, "s3torchconnector[dcp]", TORCH
    )
    session.run("python", "-m", "nightly", *session.posargs)


@nox.session(python=PYTHON)
def compat_report(session: nox.Session) -> None:
    """After ``nox -s compat``: copy each release's matrix.json under docs/compatibility/ and
    generate docs/compatibility.md and the release column of docs/known-bugs.md from them."""
    session.install("packaging")
    session.run("python", "-m", "nightly.compat", f"--runs={COMPAT_RUNS}", *session.posargs)


PERF_RUN = "perf/results/local/latest.json"


@nox.session(python=PYTHON)
def perf(session: nox.Session) -> None:
    """Benchmarks at full size: saves a JSON run, prints the table, writes the chart beside it."""
    _install(session, "perf")
    session.run("pytest", "perf", f"--benchmark-json={PERF_RUN}", *session.posargs)
    session.run("python", "-m", "perf.report", PERF_RUN)


@nox.session(python=PYTHON)
def perf_compare(session: nox.Session) -> None:
    """Gate the last perf run against a stored one: nox -s perf_compare -- perf/baselines/M.json."""
    _install(session, "perf")
    session.run(
        "python", "-m", "perf.report", PERF_RUN, "--no-chart", "--compare", *session.posargs
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy --strict over the packages."""
    _install(session, "lint,test,s3")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
