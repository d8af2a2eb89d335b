"""Session state of the benchmarks: parsed options, cached sources and saved checkpoints."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import pytest
import torch

from perf import _drive
from perf.workloads import Layout, Piece, Workload, make_tensors, nbytes, split
from spec_tests.api import Backend, claims, locations

__all__ = ["Checkpoints", "Materials", "Settings", "require"]


@dataclass(frozen=True, slots=True)
class Settings:
    """The run's options, parsed once."""

    size: int
    rounds: int
    drop_caches: bool


def require(backend: Backend, workload: Workload) -> None:
    """Skip unless ``backend`` claims what ``workload`` needs."""
    needs = ["multi-rank"] if workload.sharded else []
    if workload.save != workload.load:
        needs.append("reshard")
    for capability in needs:
        if not claims(backend, capability):
            pytest.skip(f"backend {backend.name!r} does not claim capability {capability!r}")


class Materials:
    """Source tensors and their per-rank pieces, built once and kept while they are reused."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._tensors: dict[str, dict[str, torch.Tensor]] = {}
        # Sharded copies cost as much memory as the source: keep only the latest two.
        self._pieces: OrderedDict[tuple[str, str, bool], list[list[Piece]]] = OrderedDict()

    def tensors(self, workload: Workload) -> dict[str, torch.Tensor]:
        """The workload's whole tensors (shared by workloads of the same model)."""
        if workload.model not in self._tensors:
            self._tensors[workload.model] = make_tensors(workload.tensors(self.size))
        return self._tensors[workload.model]

    def pieces(self, workload: Workload, layout: Layout, *, save: bool) -> list[list[Piece]]:
        """Per rank, the workload's pieces in ``layout`` (see :func:`perf.workloads.split`)."""
        key = (workload.model, layout.name, save)
        if key not in self._pieces:
            self._pieces[key] = split(self.tensors(workload), layout, save=save)
            while len(self._pieces) > 2:
                self._pieces.popitem(last=False)
        self._pieces.move_to_end(key)
        return self._pieces[key]


class Checkpoints:
    """Checkpoints saved (untimed) for the load benchmarks, kept within a byte budget.

    ``root`` is a local folder or a URL prefix (``--perf-root``).

    The budget (``keep`` times the workload size) bounds the disk a 1 GiB run needs, while the
    small metadata-scale checkpoints stay for every benchmark that reads them.
    """

    def __init__(self, root: str, materials: Materials, keep: int = 3) -> None:
        self._root, self._materials = root, materials
        self._budget = keep * materials.size
        self._saved: OrderedDict[tuple[str, str, str], tuple[str, int]] = OrderedDict()
        self._count = 0

    def path(self, backend: Backend, workload: Workload) -> str:
        """A checkpoint of ``workload`` in its save layout, written by ``backend``."""
        key = (backend.name, workload.model, workload.save.name)
        if key not in self._saved:
            path = f"{self._root}/ckpt{self._count}"
            self._count += 1
            ranks = self._materials.pieces(workload, workload.save, save=True)
            _drive.save([backend.make_writer(path) for _ in ranks], path, ranks)
            self._saved[key] = (path, nbytes(ranks))
            while len(self._saved) > 1 and sum(n for _, n in self._saved.values()) > self._budget:
                oldest, _ = self._saved.popitem(last=False)[1]
                locations.remove(oldest)
        self._saved.move_to_end(key)
        return self._saved[key][0]
