"""Time to first read at scale: ``read_metadata`` then load planning, 10k to 1M chunks.

A checkpoint of a million chunks takes hours to save item by item, and planning reads only
the metadata, so each backend's metadata file is written directly, in the backend's own
format, for the workload's layout (tensors of row shards; perf/README.md): dcp_impl's JSON
document, or torch's pickled ``Metadata`` with its ``_StorageInfo`` records. No data file
exists; the timed call is what every rank of a restarting job does before its first read:
``read_metadata()`` on a fresh reader, then torch's ``DefaultLoadPlanner`` and the reader's
``prepare_*_plan`` over the whole state dict (:func:`perf._drive.plan_load`).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)

from dcp_impl import filesystem, metadata
from perf import _drive
from perf._state import Settings
from perf.bench import Case, measure
from perf.workloads import FIRST_READ, SIZES, WORKLOADS, Workload
from spec_tests.api import Backend

#: The smallest size each workload runs at: the nightly size for a million chunks.
_FROM_SIZE = {"sharded10k": 0, "sharded100k": SIZES["small"], "sharded300k": SIZES["default"]}


def synthetic_metadata(workload: Workload, location: Callable[[int, int], object]) -> Metadata:
    """The Metadata a save of ``workload`` in its save layout commits; values from ``location``.

    ``location(rank, nbytes)`` is the backend's storage_data value of one rank's chunk.
    """
    entries: dict[str, TensorStorageMetadata | BytesStorageMetadata] = {}
    storage: dict[MetadataIndex, object] = {}
    for spec in workload.tensors(0):
        chunks: list[ChunkStorageMetadata] = []
        for rank, boxes in enumerate(workload.save.boxes(spec.shape)):
            for box in boxes:
                chunk = ChunkStorageMetadata(torch.Size(box.offsets), torch.Size(box.sizes))
                index = MetadataIndex(spec.name, chunk.offsets, len(chunks))
                storage[index] = location(rank, box.numel * spec.dtype.itemsize)
                chunks.append(chunk)
        size = torch.Size(spec.shape)
        entries[spec.name] = TensorStorageMetadata(TensorProperties(spec.dtype), size, chunks)
    return Metadata(entries, storage_data=storage)


def _write_dcp_impl(workload: Workload, folder: Path) -> None:
    def location(rank: int, nbytes: int) -> metadata.ItemLocation:
        return metadata.ItemLocation(f"data-{rank:032x}-r{rank}-0.bin", 0, nbytes, "xxh3_64:0")

    text = metadata.dumps(synthetic_metadata(workload, location))
    (folder / filesystem.METADATA_FILE).write_text(text, encoding="utf-8")


def _write_torch(workload: Workload, folder: Path) -> None:
    def location(rank: int, nbytes: int) -> _StorageInfo:
        return _StorageInfo(f"__{rank}_0.distcp", 0, nbytes)

    with open(folder / ".metadata", "wb") as file:
        pickle.dump(synthetic_metadata(workload, location), file)


#: Backends whose metadata file this benchmark can write, by backend name.
_WRITERS = {"dcp_impl-fs": _write_dcp_impl, "torch-fs": _write_torch}


@pytest.mark.parametrize("workload_name", FIRST_READ)
def test_first_read(
    benchmark: Any,
    backend: Backend,
    workload_name: str,
    settings: Settings,
    tmp_path: Path,
    drop_caches: Callable[[], None],
) -> None:
    workload = WORKLOADS[workload_name]
    if settings.size < _FROM_SIZE.get(workload_name, SIZES["default"]):
        pytest.skip(f"{workload_name} runs at a larger --perf-size (see perf/README.md)")
    if backend.name not in _WRITERS:
        pytest.skip(f"no synthetic metadata writer for backend {backend.name!r}")
    _WRITERS[backend.name](workload, tmp_path)
    path = str(tmp_path)
    specs = workload.tensors(settings.size)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        reader = backend.make_reader(path)
        reader.reset(path)
        state_dict = {s.name: torch.zeros(s.shape, dtype=s.dtype) for s in specs}
        drop_caches()
        return (reader, state_dict), {}

    def target(reader: Any, state_dict: dict[str, Any]) -> Any:
        return _drive.plan_load(reader, reader.read_metadata(), state_dict)

    case = Case("first_read", workload.name, backend.name, "backend", 0)
    plan = measure(benchmark, case, target, setup, rounds=settings.rounds)
    assert len(plan.items) == sum(len(b) for s in specs for b in workload.save.boxes(s.shape))
