"""Options and fixtures of the benchmarks: sizes, backends, cached sources and checkpoints."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from perf import _drive
from perf._state import Checkpoints, Materials, Settings, require
from perf.bench import Case, check_loaded, measure
from perf.workloads import WORKLOADS, fresh_targets, nbytes, parse_size
from spec_tests.api import Backend, BackendSpecError, load_backend, locations

#: Backends measured side by side unless --perf-backends says otherwise.
DEFAULT_BACKENDS = ("dcp_impl-fs", "dcp_impl-hf", "torch-fs", "torch-hf")
#: The same on a URL --perf-root: torch's own backend for URLs instead of its local-only two.
URL_BACKENDS = ("dcp_impl-fs", "dcp_impl-hf", "torch-fsspec")
_DROP_CACHES = Path("/proc/sys/vm/drop_caches")
#: Process counts of the multi-process benchmarks; the smoke run (timing disabled) skips 4,
#: which on a 2-core machine only adds minutes of oversubscribed processes.
MEASURED_PROCS = (1, 2, 4)
SMOKE_PROCS = (1, 2)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perf", "dcp-conformance benchmarks (perf/)")
    group.addoption(
        "--perf-size",
        default="default",
        help="workload size: tiny (~4 MiB), small (64 MiB), default (1 GiB) or e.g. 256MiB",
    )
    group.addoption("--perf-rounds", type=int, default=5, help="timed rounds per benchmark")
    group.addoption(
        "--perf-backends",
        default=None,
        help="comma-separated backend specs to measure (built-in names or module:attr); "
        f"a --dcp-backend spec is added to them (default: {','.join(DEFAULT_BACKENDS)}, "
        f"on a URL --perf-root {','.join(URL_BACKENDS)})",
    )
    group.addoption(
        "--perf-root",
        default=None,
        metavar="URL",
        help="write the benchmarks' checkpoints under URL: a local directory or an fsspec URL "
        "such as s3://bucket/perf (default: pytest's temporary directory); on a URL, benchmarks "
        "of local files and memory only (baselines, memcpy) are skipped",
    )
    group.addoption(
        "--perf-procs",
        default=None,
        help="comma-separated process counts of the multi-process benchmarks (default: "
        f"{','.join(map(str, MEASURED_PROCS))}; {','.join(map(str, SMOKE_PROCS))} with "
        "--benchmark-disable)",
    )
    group.addoption(
        "--perf-drop-caches",
        action="store_true",
        help="drop the page cache before each timed load / read_metadata round (needs root)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # pytest-benchmark writes --benchmark-json only at the very end: a missing folder
    # would throw a whole measured run away.
    json_path = config.getoption("benchmark_json", None)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: object, output_json: dict[str, object]
) -> None:
    """Record what the numbers depend on beside them (perf/report.py prints it)."""
    import torch

    output_json["perf"] = {
        "size": parse_size(config.getoption("--perf-size")),
        "rounds": config.getoption("--perf-rounds"),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "drop_caches": config.getoption("--perf-drop-caches"),
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A benchmark that fails before it starts timing (e.g. in the untimed save of its
    # checkpoint) also gets pytest-benchmark's "fixture was not used" warning, which the
    # project's filterwarnings=error turns into a second, misleading error.
    unused = pytest.mark.filterwarnings("ignore:Benchmark fixture was not used")
    root = config.getoption("--perf-root")
    local_only = pytest.mark.skip(
        reason=f"--perf-root {root} is a URL: this benchmark measures local files or memory only"
    )
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(unused)
            # Only benchmarks whose locations come from the root measure the store.
            if (
                root
                and locations.is_url(root)
                and not _ROOTED & set(getattr(item, "fixturenames", ()))
            ):
                item.add_marker(local_only)


#: Fixtures through which a benchmark's checkpoints live under --perf-root.
_ROOTED = frozenset({"perf_location", "checkpoints"})


def _backend_specs(config: pytest.Config) -> list[str]:
    root = config.getoption("--perf-root")
    default = URL_BACKENDS if root and locations.is_url(root) else DEFAULT_BACKENDS
    chosen = config.getoption("--perf-backends") or ",".join(default)
    specs = [s.strip() for s in chosen.split(",") if s.strip()]
    extra = config.getoption("--dcp-backend")  # registered by the spec_tests plugin
    if extra and extra not in specs:
        specs.append(extra)
    return specs


def _procs(config: pytest.Config) -> list[int]:
    chosen = config.getoption("--perf-procs")
    if chosen is None:
        return list(SMOKE_PROCS if config.getoption("benchmark_disable") else MEASURED_PROCS)
    try:
        counts = [int(p) for p in chosen.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise pytest.UsageError(f"--perf-procs: expected counts >= 1 such as 1,2,4, got {chosen}")
    return counts


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_spec" in metafunc.fixturenames:
        metafunc.parametrize("backend_spec", _backend_specs(metafunc.config))
    if "procs" in metafunc.fixturenames:
        metafunc.parametrize("procs", _procs(metafunc.config))


@pytest.fixture(scope="session")
def backend_specs(pytestconfig: pytest.Config) -> list[str]:
    """Every backend spec this run measures (what ``backend_spec`` takes, all at once)."""
    return _backend_specs(pytestconfig)


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    try:
        size = parse_size(pytestconfig.getoption("--perf-size"))
    except ValueError as err:
        raise pytest.UsageError(str(err)) from err
    rounds = pytestconfig.getoption("--perf-rounds")
    if rounds < 1:
        raise pytest.UsageError(f"--perf-rounds: expected a count >= 1, got {rounds}")
    return Settings(size, rounds, pytestconfig.getoption("--perf-drop-caches"))


@pytest.fixture
def backend(backend_spec: str, tmp_path: Path, perf_root: str) -> Backend:
    """The backend named by the test's ``backend_spec``; skipped when it cannot be built.

    On a URL ``--perf-root`` it is also skipped unless its writer accepts that URL: torch's
    local-only writers would otherwise create a local folder named ``s3:``.
    """
    try:
        found = load_backend(backend_spec)
        writer = found.make_writer(str(tmp_path / "probe"))
    except (BackendSpecError, ImportError, AttributeError) as err:
        pytest.skip(f"backend {backend_spec!r} unavailable: {type(err).__name__}: {err}")
    if locations.is_url(perf_root) and not writer.validate_checkpoint_id(perf_root):
        pytest.skip(f"backend {found.name!r} does not take URLs: its writer refuses {perf_root}")
    return found


@pytest.fixture(scope="session")
def materials(settings: Settings) -> Materials:
    return Materials(settings.size)


@pytest.fixture(scope="session")
def perf_root(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """This session's folder (or URL prefix) for checkpoints: fresh, removed at the end."""
    parent = pytestconfig.getoption("--perf-root")
    if not parent:
        yield str(tmp_path_factory.mktemp("perf"))  # pytest prunes its old temporary folders
        return
    root = f"{parent.rstrip('/')}/perf-{uuid.uuid4().hex[:12]}"
    yield root
    locations.remove(root)


@pytest.fixture
def perf_location(perf_root: str) -> Iterator[Callable[[], str]]:
    """A callable naming a new, not yet existing location under ``perf_root`` on every call.

    Whatever is left at those locations is removed when the test ends.
    """
    test_dir = f"{perf_root}/{uuid.uuid4().hex[:12]}"
    rounds = itertools.count()
    yield lambda: f"{test_dir}/round{next(rounds)}"
    locations.remove(test_dir)


@pytest.fixture(scope="session")
def checkpoints(perf_root: str, materials: Materials) -> Checkpoints:
    return Checkpoints(f"{perf_root}/checkpoints", materials)


@pytest.fixture(scope="session")
def drop_caches(settings: Settings) -> Callable[[], None]:
    """Empties the page cache when --perf-drop-caches asks for it, else does nothing."""
    if not settings.drop_caches:
        return lambda: None

    def drop() -> None:
        os.sync()  # dirty pages cannot be dropped: write them back first
        try:
            _DROP_CACHES.write_text("3\n")
        except OSError as err:  # not root, or a container's read-only /proc/sys
            pytest.skip(f"--perf-drop-caches: cannot write {_DROP_CACHES}: {err}")

    return drop


@pytest.fixture
def load_bench(
    benchmark: Any,
    backend: Backend,
    settings: Settings,
    materials: Materials,
    checkpoints: Checkpoints,
    drop_caches: Callable[[], None],
) -> Callable[..., None]:
    """``load_bench(workload_name, device="cpu")`` times loads of a workload with the backend.

    Each round loads into fresh zero-filled targets of every rank; afterwards the last
    round's targets are checked byte for byte. Page caches are dropped (when asked) for
    CPU loads only: GPU reads are measured from page-cached files.
    """

    def run(workload_name: str, device: str = "cpu") -> None:
        workload = WORKLOADS[workload_name]
        require(backend, workload)
        path = checkpoints.path(backend, workload)
        specs = workload.tensors(settings.size)
        moved = nbytes(fresh_targets(specs, workload.load, device="meta"))  # sizes only

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            targets = fresh_targets(specs, workload.load, device)
            readers = [backend.make_reader(path) for _ in targets]
            if device == "cpu":
                drop_caches()
            return (readers, path, targets), {}

        def target(readers: Any, path: str, targets: Any) -> Any:
            _drive.load(readers, path, targets)
            return targets

        op = "load" if device == "cpu" else "gpu-load"
        case = Case(op, workload.name, backend.name, "backend", moved, device)
        check_loaded(
            materials.tensors(workload),
            measure(benchmark, case, target, setup, rounds=settings.rounds),
        )

    return run
