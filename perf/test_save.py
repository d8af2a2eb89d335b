"""Save throughput: each backend, with and without fsync, beside safetensors and torch.save."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from perf import _drive
from perf._baseline_io import SAVERS
from perf._state import Materials, Settings, require
from perf.bench import Case, measure
from perf.workloads import SHARDED, UNSHARDED, WORKLOADS, nbytes
from spec_tests.api import Backend, locations

FSYNC = pytest.mark.parametrize("fsync", [False, True], ids=["nosync", "fsync"])


def _has_sync_files(writer: Any) -> bool:
    # Not part of the Backend contract: torch's and dcp_impl's writers both keep the
    # constructor's ``sync_files`` flag as an attribute and read it while writing.
    return isinstance(getattr(writer, "sync_files", None), bool)


def _settle() -> None:
    """Before each timed save: write back every dirty page. A save that starts while the
    kernel still writes back an earlier round's (or benchmark's) gigabyte is throttled by it,
    and a training job saves long after its previous save was written back."""
    os.sync()


def _fresh_folders(root: Path) -> Any:
    """A setup helper: each call names a new, not yet existing folder under ``root``."""
    return (root / f"round{n}" for n in itertools.count())


@FSYNC
@pytest.mark.parametrize("workload_name", UNSHARDED + SHARDED)
def test_save(
    benchmark: Any,
    backend: Backend,
    workload_name: str,
    fsync: bool,
    settings: Settings,
    materials: Materials,
    tmp_path: Path,
    perf_location: Callable[[], str],
) -> None:
    workload = WORKLOADS[workload_name]
    require(backend, workload)
    ranks = materials.pieces(workload, workload.save, save=True)
    option = _has_sync_files(backend.make_writer(str(tmp_path / "probe")))
    if fsync and not option:
        pytest.skip(f"{backend.name}'s writer has no sync_files option: measured as 'save' only")
    if fsync and locations.is_url(perf_location()):
        pytest.skip("--perf-root is a URL: an object store has no fsync, measured as 'save' only")

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        path = perf_location()
        writers: list[Any] = [backend.make_writer(path) for _ in ranks]
        for writer in writers if option else ():
            writer.sync_files = fsync
        _settle()
        return (writers, path, ranks), {}

    def teardown(writers: Any, path: str, ranks: Any) -> None:
        locations.remove(path)  # a 1 GiB workload would otherwise fill the disk round by round

    op = "save-fsync" if fsync else "save"
    case = Case(op, workload.name, backend.name, "backend", nbytes(ranks))
    measure(benchmark, case, _drive.save, setup, rounds=settings.rounds, teardown=teardown)


@FSYNC
@pytest.mark.parametrize("workload_name", UNSHARDED)
@pytest.mark.parametrize("baseline", sorted(SAVERS))
def test_save_baseline(
    benchmark: Any,
    baseline: str,
    workload_name: str,
    fsync: bool,
    settings: Settings,
    materials: Materials,
    tmp_path: Path,
) -> None:
    workload = WORKLOADS[workload_name]
    tensors = materials.tensors(workload)
    folders = _fresh_folders(tmp_path)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        folder = next(folders)
        folder.mkdir()
        _settle()
        return (tensors, folder, fsync), {}

    def teardown(tensors: Any, folder: Path, fsync: bool) -> None:
        shutil.rmtree(folder)

    op = "save-fsync" if fsync else "save"
    moved = sum(t.nbytes for t in tensors.values())
    case = Case(op, workload.name, baseline, "baseline", moved)
    measure(benchmark, case, SAVERS[baseline], setup, rounds=settings.rounds, teardown=teardown)
