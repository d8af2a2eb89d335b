"""pytest plugin of the DCP conformance suite (entry point ``dcp_spec``, active in every run).

Provides the ``dcp_backend`` / ``dcp_location`` / ``dcp_backend_spec`` fixtures, the
``dcp_requires`` marker (capability skips), expected failures from TOML files, the
hypothesis profiles ``dcp-dev`` / ``dcp-ci`` / ``dcp-nightly`` and the ``--dcp-report``
result file behind ``python -m spec_tests matrix``.

It is loaded into every pytest run of an environment that has dcp-conformance
installed, so importing it must stay cheap and runs that do not use the suite must
not notice it: torch, hypothesis and the backends are imported lazily, only when the
suite is in use.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from spec_tests.backends import Backend
    from spec_tests.matrix import Recorder
    from spec_tests.s3server import LocalS3

ENV_VAR = "DCP_SPEC_BACKEND"
DEFAULT_BACKEND = "reference"
PACKAGE_DIR = Path(__file__).resolve().parent
XFAILS_DIR = PACKAGE_DIR / "xfails"
PROFILES = ("dcp-dev", "dcp-ci", "dcp-nightly", "dcp-selftest")


@dataclass(frozen=True, slots=True)
class XfailEntry:
    """One ``[[xfail]]`` entry of an expected-failures file."""

    test: str  # node id relative to the spec_tests package (or rootdir), fnmatch globs allowed
    reason: str
    source: str  # the file it came from, for messages
    issue: str | None = None

    def matches(self, nodeid: str) -> bool:
        """Whether this entry covers ``nodeid`` (an entry without ``[param]`` covers them all)."""
        # Brackets are literal (parametrization ids), only * and ? are globs.
        pattern = self.test.replace("[", "\0").replace("]", "[]]").replace("\0", "[[]")
        base = nodeid.split("[", 1)[0]
        return fnmatch.fnmatchcase(nodeid, pattern) or fnmatch.fnmatchcase(base, pattern)

    @property
    def mark_reason(self) -> str:
        """The xfail reason shown by pytest: the entry's reason plus its issue."""
        return f"{self.reason} ({self.issue})" if self.issue else self.reason


@dataclass(slots=True)
class _State:
    spec: str
    explicit: bool  # the spec came from --dcp-backend or the environment
    requested: bool  # this run is a run of the suite
    root: str | None = None  # --dcp-root
    backend: Backend | None = None
    entries: list[XfailEntry] = field(default_factory=list)
    unmatched: list[XfailEntry] = field(default_factory=list)
    recorder: Recorder | None = None
    previous_profile: str | None = None

    def load(self) -> Backend:
        if self.backend is None:
            from spec_tests.backends import load_backend, probe

            backend = load_backend(self.spec)
            if self.root is not None and "://" in self.root:
                # A URL root: probe there, so that a backend taking URLs only is not refused.
                location = _child(self.root, "dcp-probe-")
                try:
                    probe(backend, location)
                finally:
                    _remove(location)
            else:
                probe(backend)
            self.backend = backend
        return self.backend


_STATE = pytest.StashKey[_State]()


def pytest_addoption(parser: pytest.Parser) -> None:
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


@pytest.hookimpl(tryfirst=True)  # profiles must exist before hypothesis loads --hypothesis-profile
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "dcp_requires(*capabilities): skip unless the backend under test claims every capability",
    )
    spec = config.getoption("--dcp-backend") or os.environ.get(ENV_VAR) or ""
    state = _State(
        spec=spec or DEFAULT_BACKEND,
        explicit=bool(spec),
        requested=bool(spec) or _targets_suite(config),
        root=config.getoption("--dcp-root"),
    )
    config.stash[_STATE] = state
    if state.explicit:
        from spec_tests.backends import BackendSpecError

        try:
            state.load()
        except BackendSpecError as err:
            raise pytest.UsageError(f"--dcp-backend / {ENV_VAR}: {err}") from err
    profile = config.getoption("--hypothesis-profile", None)
    if state.requested or (isinstance(profile, str) and profile in PROFILES):
        state.previous_profile = _register_profiles(load_default=state.requested and not profile)
    if config.getoption("--dcp-report"):
        from spec_tests.matrix import Recorder

        state.recorder = Recorder()
        config.pluginmanager.register(_ReportHooks(state.recorder), "dcp_spec_report")


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None and state.previous_profile is not None:
        # Loading a profile is process-global; restore it for in-process runs (pytester).
        from hypothesis import settings

        settings.load_profile(state.previous_profile)


def _targets_suite(config: pytest.Config) -> bool:
    for arg in config.args:
        target = arg.split("::", 1)[0]
        if target == "spec_tests" or target.startswith("spec_tests."):
            return True
        try:
            Path(target).resolve().relative_to(PACKAGE_DIR)
        except (ValueError, OSError):
            continue
        return True
    return False


def _register_profiles(*, load_default: bool) -> str:
    from hypothesis import HealthCheck, Phase, settings

    # Generating and storing multi-MiB tensors on shared CI cores is slow by nature, and
    # dcp_location is a function-scoped fixture that is *meant* to be called once per example.
    quiet = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    # Profiles inherit the loaded one: under CI=true that is hypothesis' derandomized "ci"
    # profile, so the exploring profiles say derandomize=False themselves.
    settings.register_profile(
        "dcp-dev", max_examples=10, derandomize=False, deadline=None, suppress_health_check=quiet
    )
    settings.register_profile(
        "dcp-ci",
        max_examples=25,
        derandomize=True,
        deadline=None,
        print_blob=True,
        database=None,  # derandomized runs gain nothing from a replay database
        suppress_health_check=quiet,
    )
    # The self-test's: dcp-ci's examples (derandomized, so the same draws), without shrinking
    # a failure or explaining it. Only the verdict counts there, and it is the same.
    settings.register_profile(
        "dcp-selftest",
        settings.get_profile("dcp-ci"),
        phases=[p for p in Phase if p not in (Phase.shrink, Phase.explain)],
    )
    settings.register_profile(
        "dcp-nightly",
        max_examples=400,
        derandomize=False,
        deadline=None,
        print_blob=True,
        suppress_health_check=quiet,
    )
    previous = settings.get_current_profile_name()
    if load_default:
        settings.load_profile("dcp-dev")
    return previous


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash[_STATE]
    if not state.requested:
        return None
    from spec_tests.backends import CAPABILITIES, BackendSpecError

    try:
        backend = state.load()
    except BackendSpecError as err:
        return [f"dcp backend: {state.spec!r} cannot be loaded: {err}"]
    caps = CAPABILITIES.keys() if backend.capabilities is None else backend.capabilities
    dtypes = [c for c in CAPABILITIES if c.startswith("dtype:") and c in caps]
    others = [c for c in CAPABILITIES if not c.startswith("dtype:")]
    lacking = [c for c in others if c not in caps]
    return [
        f"dcp backend: {backend.name} (spec {state.spec!r}); "
        f"claims {', '.join(c for c in others if c in caps) or 'no general capability'}"
        + (f"; not {', '.join(lacking)}" if lacking else ""),
        f"dcp dtypes: {len(dtypes)} of {sum(c.startswith('dtype:') for c in CAPABILITIES)}: "
        + ", ".join(d.removeprefix("dtype:") for d in dtypes),
    ]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dcp_backend_spec(pytestconfig: pytest.Config) -> str:
    """The SPEC of the backend under test, for rebuilding it in a child process."""
    return pytestconfig.stash[_STATE].spec


@pytest.fixture(scope="session")
def dcp_backend(pytestconfig: pytest.Config) -> Backend:
    """The backend under test (--dcp-backend, else DCP_SPEC_BACKEND, else ``reference``)."""
    return pytestconfig.stash[_STATE].load()


@pytest.fixture(scope="session")
def _dcp_root(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    parent = pytestconfig.getoption("--dcp-root")
    if parent:
        root = _child(parent, "dcp-session-")
    else:
        root = str(tmp_path_factory.mktemp("dcp-locations"))
    _makedirs(root)
    yield root
    _remove(root)


@pytest.fixture
def dcp_location(_dcp_root: str) -> Iterator[Callable[[], str]]:
    """A callable returning a NEW empty checkpoint location on every call (once per example).

    A location is a local directory, or a URL with a fresh prefix when ``--dcp-root`` is one.
    """
    issued: list[str] = []

    def new_location() -> str:
        issued.append(_child(_dcp_root, "ckpt-"))
        _makedirs(issued[-1])
        return issued[-1]

    yield new_location
    reference = sys.modules.get("spec_tests.reference")
    for location in issued:
        if reference is not None:  # the in-memory backend holds checkpoints until told otherwise
            reference.discard(location)
        _remove(location)


def _child(parent: str, prefix: str) -> str:
    # Joined as text, not through a filesystem, so that the URL keeps the user's spelling
    # (protocol, chained protocols) for the backend; "/" separates local paths on POSIX too.
    return f"{parent.rstrip('/')}/{prefix}{uuid.uuid4().hex[:16]}"


def _makedirs(location: str) -> None:
    from fsspec.core import url_to_fs

    # A local directory is created; an object store has no directories, where this is a no-op.
    fs, path = url_to_fs(location)
    fs.makedirs(path, exist_ok=True)


def _remove(location: str) -> None:
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(location)
        fs.rm(path, recursive=True)
    except Exception:  # cleanup is best effort: a missing prefix or a dead server is no failure
        pass


@pytest.fixture(scope="session")
def dcp_local_s3() -> Iterator[LocalS3]:
    """A local S3 server (moto, 127.0.0.1) with an empty bucket, its env exported for the session.

    See :mod:`spec_tests.s3server`; skips when its dependencies (the ``s3`` extra) are missing.
    """
    for module in ("moto.server", "boto3", "s3fs"):
        pytest.importorskip(module, reason=f"the local S3 server needs {module.split('.')[0]}")
    from spec_tests.s3server import local_s3

    with local_s3() as s3:
        yield s3


@pytest.fixture(autouse=True)
def _dcp_capability_skip(request: pytest.FixtureRequest) -> None:
    # A fixture rather than a collection hook, so that a kit class overriding dcp_backend
    # gets its skips from its own backend.
    wanted = [cap for mark in request.node.iter_markers("dcp_requires") for cap in mark.args]
    if not wanted:
        return
    from spec_tests.backends import claims

    backend = request.getfixturevalue("dcp_backend")
    missing = [cap for cap in dict.fromkeys(wanted) if not claims(backend, cap)]
    if len(missing) == 1:
        pytest.skip(f"backend {backend.name!r} does not claim capability {missing[0]!r}")
    if missing:
        listed = ", ".join(repr(c) for c in missing)
        pytest.skip(f"backend {backend.name!r} does not claim capabilities {listed}")


# --- expected failures ----------------------------------------------------------------------


def read_xfails(path: Path) -> list[XfailEntry]:
    """Parse an expected-failures TOML file; a malformed one is a usage error."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise pytest.UsageError(f"xfails file {path}: cannot read: {err}") from err
    entries = []
    for n, entry in enumerate(raw.get("xfail", [])):
        test, reason, issue = entry.get("test"), entry.get("reason"), entry.get("issue")
        unknown = set(entry) - {"test", "reason", "issue"}
        if not isinstance(test, str) or not isinstance(reason, str) or unknown:
            raise pytest.UsageError(
                f"xfails file {path}: entry {n}: expected string keys test, reason and optional "
                f"issue, got {entry!r}"
            )
        entries.append(
            XfailEntry(test, reason, str(path), issue if isinstance(issue, str) else None)
        )
    return entries


def _suite_nodeid(item: pytest.Item) -> str:
    """``item``'s node id relative to the spec_tests package when it lives there."""
    try:
        rel = Path(item.path).resolve().relative_to(PACKAGE_DIR).as_posix()
    except ValueError:
        return item.nodeid
    _, sep, rest = item.nodeid.partition("::")
    return rel + sep + rest


def _in_package(item: pytest.Item) -> bool:
    return Path(item.path).resolve().is_relative_to(PACKAGE_DIR)


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, so entries see every collected test
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[_STATE]
    in_suite = any(_in_package(item) for item in items)
    # torch.toml lists torch's own bugs (the torch_planning properties): every run has them.
    for builtin_file in (XFAILS_DIR / f"{state.spec}.toml", XFAILS_DIR / "torch.toml"):
        if in_suite and builtin_file.is_file():
            state.entries += read_xfails(builtin_file)
    for path in config.getoption("--dcp-xfails-file"):
        state.entries += read_xfails(Path(path))
    if not state.entries:
        return
    used: set[int] = set()
    ids = {item.nodeid: _suite_nodeid(item) for item in items}
    strict = _reproducible()
    for item in items:
        for n, entry in enumerate(state.entries):
            if entry.matches(ids[item.nodeid]):
                item.add_marker(pytest.mark.xfail(strict=strict, reason=entry.mark_reason))
                _without_shrinking(item)
                used.add(n)
                break
    modules = {nodeid.split("::", 1)[0] for nodeid in ids.values()}
    state.unmatched = [
        e
        for n, e in enumerate(state.entries)
        if n not in used and not _not_collected(e, modules, config)
    ]


def _reproducible() -> bool:
    """Whether this run draws the same examples every time (dcp-ci is derandomized).

    Entries are reproduced under dcp-ci; a randomized run may miss the one example
    that fails, so there an unexpected pass is reported (XPASS), not a failure.
    """
    from hypothesis import settings

    current = settings.default
    return current is not None and current.derandomize


def _without_shrinking(item: pytest.Item) -> None:
    # Shrinking an expected failure is wasted work: on a backend with a dozen known bugs it
    # takes most of a CI run, minimising examples nobody reads. Hypothesis reads a test's
    # settings from this attribute on every call; without it (not a hypothesis test, or a
    # future hypothesis), nothing changes.
    obj = getattr(item, "obj", None)
    test = getattr(obj, "__func__", obj)
    current = getattr(test, "_hypothesis_internal_use_settings", None)
    if current is None:
        return
    from hypothesis import Phase, settings

    phases = [p for p in current.phases if p not in (Phase.shrink, Phase.explain)]
    test._hypothesis_internal_use_settings = settings(current, phases=phases)  # type: ignore[union-attr]


def _not_collected(entry: XfailEntry, collected: set[str], config: pytest.Config) -> bool:
    # An entry for a module that exists but was not collected this run (a partial run such as
    # `pytest spec_tests/test_roundtrip.py`) is not stale; one naming no existing module is.
    module = entry.test.split("::", 1)[0]
    if any(fnmatch.fnmatchcase(m, module) for m in collected):
        return False
    return any(PACKAGE_DIR.glob(module)) or any(config.rootpath.glob(module))


def property_name(item: pytest.Item) -> str:
    """The matrix row of a test: ``<module-stem>::<test function>`` (module without ``test_``)."""
    function = getattr(item, "function", None)
    module = getattr(function, "__module__", None) or item.path.stem
    stem = module.rsplit(".", 1)[-1].removeprefix("test_")
    return f"{stem}::{getattr(item, 'originalname', item.name)}"


class _ReportHooks:
    """Feeds pytest's reports to the Recorder; registered only with --dcp-report."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.recorder.names = {
            item.nodeid: (_suite_nodeid(item), property_name(item)) for item in session.items
        }

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.recorder.add_collection_error(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.recorder.add(report)


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash[_STATE]
    if (
        state.unmatched
        and session.config.getoption("--dcp-strict-xfails")
        and session.exitstatus == 0
    ):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    path = session.config.getoption("--dcp-report")
    if state.recorder is not None and path:
        backend = state.backend
        caps = (
            None
            if backend is None or backend.capabilities is None
            else sorted(backend.capabilities)
        )
        state.recorder.write(
            Path(path),
            backend=backend.name if backend is not None else state.spec,
            spec=state.spec,
            capabilities=caps,
            exitstatus=int(session.exitstatus),
            unmatched_xfails=[f"{e.test} ({e.source})" for e in state.unmatched],
        )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash[_STATE]
    if not state.unmatched:
        return
    strict = config.getoption("--dcp-strict-xfails")
    terminalreporter.write_sep("=", "dcp expected failures", yellow=not strict, red=strict)
    for entry in state.unmatched:
        terminalreporter.write_line(f"xfail entry matches nothing: {entry.test} ({entry.source})")
    if strict:
        terminalreporter.write_line("--dcp-strict-xfails: stale entries fail the run")
