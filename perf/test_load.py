"""Load throughput into preallocated CPU tensors: backends, baselines and the memcpy limit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from perf._baseline_io import LOADERS, SAVERS, copy_pairs
from perf._state import Materials, Settings
from perf.bench import Case, check_loaded, measure
from perf.workloads import METADATA, SHARDED, UNSHARDED, WORKLOADS, Piece, fresh_targets


@pytest.mark.parametrize("workload_name", UNSHARDED + SHARDED)
def test_load(load_bench: Callable[[str], None], workload_name: str) -> None:
    load_bench(workload_name)


@pytest.mark.parametrize("workload_name", UNSHARDED)
@pytest.mark.parametrize("baseline", sorted(LOADERS))
def test_load_baseline(
    benchmark: Any,
    baseline: str,
    workload_name: str,
    settings: Settings,
    materials: Materials,
    tmp_path: Path,
    drop_caches: Callable[[], None],
) -> None:
    workload = WORKLOADS[workload_name]
    tensors = materials.tensors(workload)
    saver, loader = LOADERS[baseline]
    SAVERS[saver](tensors, tmp_path, False)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        (targets,) = fresh_targets(workload.tensors(settings.size), workload.load)
        drop_caches()
        return (tmp_path, targets), {}

    def target(folder: Path, targets: list[Piece]) -> list[list[Piece]]:
        loader(folder, {p.fqn: p.tensor for p in targets})
        return [targets]

    moved = sum(t.nbytes for t in tensors.values())
    case = Case("load", workload.name, baseline, "baseline", moved)
    check_loaded(tensors, measure(benchmark, case, target, setup, rounds=settings.rounds))


@pytest.mark.parametrize("workload_name", [w for w in WORKLOADS if w not in METADATA])
def test_memcpy_limit(
    benchmark: Any, workload_name: str, settings: Settings, materials: Materials
) -> None:
    """Copying each loaded piece's bytes from memory into touched memory: no load can beat it."""
    workload = WORKLOADS[workload_name]
    sources = [
        p.tensor for rank in materials.pieces(workload, workload.load, save=False) for p in rank
    ]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        targets = fresh_targets(workload.tensors(settings.size), workload.load)
        pairs = list(zip([p.tensor for rank in targets for p in rank], sources, strict=True))
        return (pairs,), {}

    case = Case("copy", workload.name, "memcpy", "limit", sum(s.nbytes for s in sources))
    measure(benchmark, case, copy_pairs, setup, rounds=settings.rounds)
