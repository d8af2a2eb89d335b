"""The in-memory reference backend: round trips through dcp.save/load and a driven reshard."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
)
from torch.distributed.checkpoint.planner import (
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list
from torch.distributed.checkpoint.state_dict_loader import load
from torch.distributed.checkpoint.state_dict_saver import save

from dcp_impl.dtypes import DTYPES, DtypeInfo
from dcp_impl.errors import CheckpointNotFoundError, LayoutMismatchError
from dcp_impl.layout import Box
from spec_tests.api import Piece, PieceSavePlanner, driver
from spec_tests.contract.reference import (
    ReferenceBackend,
    ReferenceReader,
    ReferenceWriter,
    discard,
)

BACKEND = ReferenceBackend()


@pytest.fixture
def location(tmp_path: Path) -> Any:
    path = str(tmp_path / "ckpt")
    yield path
    discard(path)


def _raw(t: torch.Tensor) -> bytes:
    flat = t.detach().clone(memory_format=torch.contiguous_format).reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def _patterned(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    numel = 1
    for side in shape:
        numel *= side
    itemsize = dtype.itemsize
    raw = torch.arange(numel * itemsize, dtype=torch.int64).remainder(251).to(torch.uint8)
    if dtype == torch.bool:
        raw = raw.remainder(2)
    return raw.view(dtype).reshape(shape) if numel else torch.empty(shape, dtype=dtype)


def _dcp_can_plan(dtype: torch.dtype) -> bool:
    # torch 2.13's save planner sizes items with torch.iinfo, which rejects the bits* dtypes.
    try:
        torch._utils._element_size(dtype)
    except TypeError:
        return False
    return True


def test_every_dtype_round_trips_bit_exactly_through_dcp(location: str) -> None:
    saved = {
        f"t.{row.name}": _patterned(row.torch_dtype, (3, 4))
        for row in DTYPES
        if _dcp_can_plan(row.torch_dtype)
    }
    save(saved, storage_writer=BACKEND.make_writer(location), no_dist=True)
    loaded = {k: torch.zeros_like(v) for k, v in saved.items()}
    load(loaded, storage_reader=BACKEND.make_reader(location), no_dist=True)
    for key, tensor in saved.items():
        assert _raw(loaded[key]) == _raw(tensor), key


@pytest.mark.parametrize("row", DTYPES, ids=lambda row: row.name)
def test_every_dtype_round_trips_bit_exactly_driven(location: str, row: DtypeInfo) -> None:
    tensor = _patterned(row.torch_dtype, (5, 2))
    _save_row_chunks(location, "w", tensor, [2, 3])
    region, _ = _read_region(location, "w", (1, 0), (3, 2), row.torch_dtype)
    assert _raw(region) == _raw(tensor[1:4])


def test_odd_shapes_views_names_and_bytes_round_trip(location: str) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    saved: dict[str, Any] = {
        "scalar": torch.tensor(-0.0),
        "nan payload": torch.tensor([0x7FC00001], dtype=torch.int32).view(torch.float32),
        "empty": torch.empty(0, 5, dtype=torch.bfloat16),
        "view.t": base.t(),
        "view.strided": base[::2, 1::3],
        "ünïcode name": torch.ones(2, dtype=torch.int8),
        "extra": {"step": 7, "note": "text"},
    }
    save(saved, storage_writer=BACKEND.make_writer(location), no_dist=True)
    loaded: dict[str, Any] = {
        k: (torch.full_like(v, 5) if isinstance(v, torch.Tensor) else {"step": 0, "note": ""})
        for k, v in saved.items()
    }
    load(loaded, storage_reader=BACKEND.make_reader(location), no_dist=True)
    for key, value in saved.items():
        if isinstance(value, torch.Tensor):
            assert loaded[key].shape == value.shape, key
            assert _raw(loaded[key]) == _raw(value), key
    assert loaded["extra"] == {"step": 7, "note": "text"}


def _save_row_chunks(location: str, fqn: str, tensor: torch.Tensor, rows: list[int]) -> Metadata:
    """Save ``tensor`` as several row chunks of one rank, driven as dcp.save does."""
    pieces, start = [], 0
    for n in rows:
        box = Box((start, *[0] * (tensor.ndim - 1)), (n, *tensor.shape[1:]))
        pieces.append(Piece(fqn, tuple(tensor.shape), box, tensor[start : start + n]))
        start += n
    saved = driver.save([ReferenceWriter(location)], location, [PieceSavePlanner(pieces)])
    return saved.metadata


class _Region:
    """A LoadPlanner stand-in filling ``dest`` and recording the resolve/commit protocol."""

    def __init__(self, dest: torch.Tensor) -> None:
        self.dest = dest
        self.resolved: list[torch.Tensor] = []
        self.committed: list[torch.Tensor] = []

    def resolve_tensor(self, item: ReadItem) -> torch.Tensor:
        view = self.dest
        for dim, (off, n) in enumerate(zip(item.dest_offsets, item.lengths, strict=True)):
            view = view.narrow(dim, off, n)
        self.resolved.append(view)
        return view

    def commit_tensor(self, item: ReadItem, tensor: torch.Tensor) -> None:
        self.committed.append(tensor)


def _read_region(
    location: str,
    fqn: str,
    offsets: tuple[int, ...],
    sizes: tuple[int, ...],
    dtype: torch.dtype = torch.int64,
) -> tuple[torch.Tensor, _Region]:
    reader = ReferenceReader(location)
    metadata = reader.read_metadata()
    reader.set_up_storage_reader(metadata, True)
    request = ChunkStorageMetadata(torch.Size(offsets), torch.Size(sizes))
    items = create_read_items_for_chunk_list(fqn, metadata.state_dict_metadata[fqn], [request])  # type: ignore[arg-type]
    nbytes = torch.Size(sizes).numel() * dtype.itemsize
    garbage = torch.full((nbytes,), 0xAB, dtype=torch.uint8).view(dtype).reshape(sizes)
    planner = _Region(garbage)
    (plan,) = reader.prepare_global_plan([reader.prepare_local_plan(LoadPlan(items))])
    reader.read_data(plan, cast(LoadPlanner, planner)).wait()
    return planner.dest, planner


def test_resharded_read_honours_storage_offsets(location: str) -> None:
    tensor = torch.arange(7 * 5, dtype=torch.int64).reshape(7, 5)
    _save_row_chunks(location, "w", tensor, [3, 4, 0])  # trailing empty chunk
    region, planner = _read_region(location, "w", (2, 1), (3, 3))  # spans two saved chunks
    assert torch.equal(region, tensor[2:5, 1:4])
    assert len(planner.resolved) == 2
    # commit_tensor gets back the very tensors resolve_tensor handed out, in order.
    assert all(a is b for a, b in zip(planner.resolved, planner.committed, strict=True))


def test_metadata_is_what_finish_got_and_a_copy(location: str) -> None:
    metadata = _save_row_chunks(location, "w", torch.ones(4, 2), [2, 2])
    read = ReferenceReader(location).read_metadata()
    assert read == metadata
    assert read is not metadata


def test_failed_save_keeps_the_previous_checkpoint(location: str) -> None:
    save({"a": torch.ones(3)}, storage_writer=BACKEND.make_writer(location), no_dist=True)
    writer = ReferenceWriter(location)
    items = [WriteItem(MetadataIndex("a", (0,)), WriteItemType.TENSOR, None, None)]

    class Failing:
        def resolve_data(self, item: WriteItem) -> torch.Tensor:
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        writer.write_data(SavePlan(items), cast(SavePlanner, Failing()))
    loaded = {"a": torch.zeros(3)}
    load(loaded, storage_reader=BACKEND.make_reader(location), no_dist=True)
    assert torch.equal(loaded["a"], torch.ones(3))


def test_overwrite_replaces_and_reset_retargets(location: str, tmp_path: Path) -> None:
    other = str(tmp_path / "other")
    writer = BACKEND.make_writer(location)
    save({"a": torch.ones(2)}, storage_writer=writer, no_dist=True)
    save({"b": torch.full((2,), 2.0)}, storage_writer=writer, no_dist=True)
    assert set(ReferenceReader(location).read_metadata().state_dict_metadata) == {"b"}
    save({"c": torch.zeros(1)}, storage_writer=writer, checkpoint_id=other, no_dist=True)
    assert set(ReferenceReader(other).read_metadata().state_dict_metadata) == {"c"}
    assert set(ReferenceReader(location).read_metadata().state_dict_metadata) == {"b"}
    discard(other)


def test_missing_checkpoint_and_bad_reads_raise_typed_errors(location: str) -> None:
    with pytest.raises(CheckpointNotFoundError, match="no committed checkpoint"):
        BACKEND.make_reader(location).read_metadata()
    _save_row_chunks(location, "w", torch.zeros(4, 2, dtype=torch.int64), [2, 2])

    class WrongShape(_Region):
        def resolve_tensor(self, item: ReadItem) -> torch.Tensor:
            return self.dest  # the whole destination, not the item's lengths

    reader = ReferenceReader(location)
    metadata = reader.read_metadata()
    reader.set_up_storage_reader(metadata, True)
    request = [ChunkStorageMetadata(torch.Size((0, 0)), torch.Size((4, 2)))]
    items = create_read_items_for_chunk_list("w", metadata.state_dict_metadata["w"], request)  # type: ignore[arg-type]
    with pytest.raises(LayoutMismatchError, match="target has shape"):
        reader.read_data(LoadPlan(items), cast(LoadPlanner, WrongShape(torch.zeros(4, 2))))


@pytest.mark.parametrize("checkpoint_id", ["x", Path("x"), 3, None, b"x"])
def test_validate_checkpoint_id_is_total(checkpoint_id: Any) -> None:
    expected = isinstance(checkpoint_id, str | os.PathLike)
    assert ReferenceWriter.validate_checkpoint_id(checkpoint_id) is expected
    assert ReferenceReader.validate_checkpoint_id(checkpoint_id) is expected
