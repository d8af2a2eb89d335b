"""GPU read throughput: loads into CUDA tensors from page-cached files, beside the pinned H2D limit.

Skipped without CUDA. The page cache is never dropped here: these benchmarks
measure the path from host memory to the device, not the disk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from perf._baseline_io import SAVERS, copy_pairs, safetensors_to_device
from perf._state import Materials, Settings
from perf.bench import Case, check_loaded, measure
from perf.workloads import UNSHARDED, WORKLOADS, Piece, fresh_targets

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("workload_name", UNSHARDED)
def test_gpu_load(load_bench: Callable[..., None], workload_name: str) -> None:
    load_bench(workload_name, device="cuda")


@pytest.mark.parametrize("workload_name", UNSHARDED)
def test_gpu_load_safetensors(
    benchmark: Any, workload_name: str, settings: Settings, materials: Materials, tmp_path: Path
) -> None:
    """safetensors' own device path: ``safe_open(..., device="cuda")``, copied into the targets."""
    workload = WORKLOADS[workload_name]
    tensors = materials.tensors(workload)
    SAVERS["safetensors"](tensors, tmp_path, False)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        (targets,) = fresh_targets(workload.tensors(settings.size), workload.load, "cuda")
        return (tmp_path, targets), {}

    def target(folder: Path, targets: list[Piece]) -> list[list[Piece]]:
        safetensors_to_device(folder, {p.fqn: p.tensor for p in targets})
        return [targets]

    moved = sum(t.nbytes for t in tensors.values())
    case = Case("gpu-load", workload.name, "safetensors-cuda", "baseline", moved, "cuda")
    check_loaded(tensors, measure(benchmark, case, target, setup, rounds=settings.rounds))


@pytest.mark.parametrize("workload_name", UNSHARDED)
def test_pinned_h2d_limit(
    benchmark: Any, workload_name: str, settings: Settings, materials: Materials
) -> None:
    """Copying the same tensors from pinned host memory: no load into the GPU can beat it."""
    workload = WORKLOADS[workload_name]
    sources = [t.pin_memory() for t in materials.tensors(workload).values()]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        pairs = [(torch.zeros_like(s, device="cuda"), s) for s in sources]
        return (pairs,), {}

    case = Case(
        "gpu-load", workload.name, "pinned-h2d", "limit", sum(s.nbytes for s in sources), "cuda"
    )
    measure(benchmark, case, copy_pairs, setup, rounds=settings.rounds)
