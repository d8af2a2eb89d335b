"""pytest plugin of the DCP conformance suite (entry point ``dcp_spec``, active in every run).

Provides the ``dcp_backend`` / ``dcp_location`` / ``dcp_backend_spec`` fixtures, the
``dcp_requires`` marker (capability skips) and the hooks behind the options (:mod:`.options`),
expected failures (:mod:`.xfails`), the hypothesis profiles (:mod:`.profiles`), ``--dcp-report``
(:mod:`.report`), the early stop and end-of-run failure summary with replay commands
(:mod:`.summary`) and how a SPEC's module and ``--dcp-xfails`` names are found (:mod:`.invocation`).

It is loaded into every pytest run of an environment that has dcp-conformance
installed, so importing it must stay cheap and runs that do not use the suite must
not notice it: torch, hypothesis and the backends are imported lazily, only when the
suite is in use.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from spec_tests.plugin.invocation import check_xfail_names, load_from
from spec_tests.plugin.options import DEFAULT_BACKEND, ENV_VAR, add_options
from spec_tests.plugin.profiles import PROFILES, register_profiles
from spec_tests.plugin.summary import header_lines, short_repr, start_summary
from spec_tests.plugin.xfails import (
    ENTRY,
    NO_SHRINK,
    XfailEntry,
    expect,
    for_torch,
    judged,
    kit_class,
    kit_classes,
    read_xfails,
)

if TYPE_CHECKING:
    from spec_tests.backends import Backend
    from spec_tests.plugin.results import Recorder
    from spec_tests.sim.s3server import LocalS3

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # spec_tests/, where the test_*.py modules are
XFAILS_DIR = PACKAGE_DIR / "xfails"


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
    invocation_dir: Path | None = None  # tried on sys.path when a module:attr is not found

    def load(self) -> Backend:
        if self.backend is None:
            from spec_tests.backends import check_constructible
            from spec_tests.sim import locations

            backend = load_from(self.spec, self.invocation_dir)
            if self.root is not None and locations.is_url(self.root):
                # A URL root: probe there, so that a backend taking URLs only is not refused.
                location = locations.child(self.root, "dcp-probe-")
                try:
                    check_constructible(backend, location)
                finally:
                    locations.remove(location, best_effort=True)
            else:
                check_constructible(backend)
            short_repr(type(backend))  # its capabilities are in the header, once per run
            self.backend = backend
        return self.backend


_STATE = pytest.StashKey[_State]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


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
        invocation_dir=config.invocation_params.dir,
    )
    config.stash[_STATE] = state
    check_xfail_names(config.getoption("--dcp-xfails"), XFAILS_DIR)
    if state.explicit:
        from spec_tests.backends import BackendSpecError

        try:
            state.load()
        except BackendSpecError as err:
            raise pytest.UsageError(f"--dcp-backend / {ENV_VAR}: {err}") from err
    profile = config.getoption("--hypothesis-profile", None)
    if state.requested or (isinstance(profile, str) and profile in PROFILES):
        state.previous_profile = register_profiles(load_default=state.requested and not profile)
    if state.requested:
        start_summary(config, state.spec, state.root)
    if config.getoption("--dcp-report"):
        from spec_tests.plugin.report import ReportHooks
        from spec_tests.plugin.results import Recorder

        state.recorder = Recorder()
        config.pluginmanager.register(ReportHooks(state.recorder, _suite_nodeid), "dcp_spec_report")


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


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash[_STATE]
    if not state.requested:
        return None
    from spec_tests.backends import BackendSpecError

    try:
        backend = state.load()
    except BackendSpecError as err:
        return [f"dcp backend: {state.spec!r} cannot be loaded: {err}"]
    return header_lines(backend, state.spec)


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
    from spec_tests.sim import locations

    parent = pytestconfig.getoption("--dcp-root")
    if parent:
        root = locations.child(parent, "dcp-session-")
    else:
        root = str(tmp_path_factory.mktemp("dcp-locations"))
    locations.makedirs(root)
    yield root
    locations.remove(root, best_effort=True)


@pytest.fixture
def dcp_location(_dcp_root: str, dcp_backend: Backend) -> Iterator[Callable[[], str]]:
    """A callable returning a NEW empty checkpoint location on every call (once per example).

    A location is a local directory, or a URL with a fresh prefix when ``--dcp-root`` is one.
    Each is removed after the test, after the backend's optional ``cleanup(location)``.
    """
    from spec_tests.sim import locations

    issued: list[str] = []

    def new_location() -> str:
        issued.append(locations.child(_dcp_root, "ckpt-"))
        locations.makedirs(issued[-1])
        return issued[-1]

    yield new_location
    cleanup = getattr(dcp_backend, "cleanup", None)
    for location in issued:
        if callable(cleanup):  # e.g. an in-memory backend frees what it holds there
            cleanup(location)
        locations.remove(location, best_effort=True)


@pytest.fixture(scope="session")
def dcp_local_s3() -> Iterator[LocalS3]:
    """A local S3 server (moto, 127.0.0.1) with an empty bucket, its env exported for the session.

    See :mod:`spec_tests.sim.s3server`; skips when its dependencies (the ``s3`` extra) are missing.
    """
    for module in ("moto.server", "boto3", "s3fs"):
        pytest.importorskip(module, reason=f"the local S3 server needs {module.split('.')[0]}")
    from spec_tests.sim.s3server import local_s3

    with local_s3() as s3:
        yield s3


@pytest.fixture(autouse=True)
def _dcp_settings(request: pytest.FixtureRequest) -> None:
    from spec_tests.plugin.profiles import bind_settings

    bind_settings(request.node, shrink=not request.node.stash.get(NO_SHRINK, False))


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


def _builtin_name(state: _State) -> str:
    # A built-in family's configuration picked as SPEC[CONFIG] is the built-in of its name.
    if "[" in state.spec and state.backend is not None:
        return state.backend.name
    return state.spec


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, so entries see every collected test
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[_STATE]
    in_suite = any(_in_package(item) for item in items)
    # torch.toml lists torch's own bugs (the torch_planning properties): every run has them.
    named = [_builtin_name(state), "torch", *config.getoption("--dcp-xfails")]
    for builtin_file in dict.fromkeys(XFAILS_DIR / f"{name}.toml" for name in named):
        if in_suite and builtin_file.is_file():
            state.entries += for_torch(read_xfails(builtin_file))
    for path in config.getoption("--dcp-xfails-file"):
        state.entries += for_torch(read_xfails(Path(path)))
    kits = kit_classes(items)
    if not state.entries and not kits:
        return
    used: set[int] = set()
    kit_used: set[int] = set()
    ids = {item.nodeid: _suite_nodeid(item) for item in items}
    # A catch-all entry (test = "*") judges only the tests no entry names.
    specific_first = sorted(state.entries, key=lambda e: e.test == "*")
    for item in items:
        # A kit class's own entries name its tests by function name, and come first.
        candidates = [(e, item.name, kit_used) for e in kits.get(kit_class(item), ())]
        candidates += [(e, ids[item.nodeid], used) for e in specific_first]
        judged = False
        for entry, name, seen in candidates:
            if not entry.matches(name):
                continue
            if not judged:
                expect(item, entry)
                judged = True
                seen.add(id(entry))
            elif entry.test != "*":
                # Shadowed (a configuration restating its base's entry), not stale: it still
                # names a test that exists. A catch-all that judges nothing is stale.
                seen.add(id(entry))
    modules = {nodeid.split("::", 1)[0] for nodeid in ids.values()}
    state.unmatched = [
        e for e in state.entries if id(e) not in used and not _not_collected(e, modules, config)
    ]
    state.unmatched += [e for es in kits.values() for e in es if id(e) not in kit_used]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    entry = item.stash.get(ENTRY, None)
    if entry is None or not entry.names_error:
        return (yield)
    try:
        return (yield)
    except (pytest.skip.Exception, pytest.xfail.Exception, KeyboardInterrupt):
        raise
    except BaseException as exc:
        verdict = judged(entry, exc)
        if verdict is exc:
            raise
        raise verdict from exc


def _not_collected(entry: XfailEntry, collected: set[str], config: pytest.Config) -> bool:
    # An entry for a module that exists but was not collected this run (a partial run such as
    # `pytest spec_tests/test_roundtrip.py`) is not stale; one naming no existing module is.
    module = entry.test.split("::", 1)[0]
    if any(fnmatch.fnmatchcase(m, module) for m in collected):
        return False
    return any(PACKAGE_DIR.glob(module)) or any(config.rootpath.glob(module))


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
