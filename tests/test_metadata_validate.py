"""dcp_impl.metadata.validate: the validation rules of docs/format.md §1.3 (V1-V4), and the
layout strategy they are checked with."""

from __future__ import annotations

import itertools

import pytest
import torch
from _metadata import PROPERTY, grid_chunks, metadatas, sample, shapes, tensor_entries
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)

from dcp_impl.errors import InvalidMetadataError
from dcp_impl.metadata import ItemLocation, dumps, loads, validate


@given(shapes(max_ndim=3).flatmap(lambda shape: st.tuples(st.just(shape), grid_chunks(shape))))
def test_strategy_grid_chunks_tile_the_tensor(
    case: tuple[torch.Size, list[ChunkStorageMetadata]],
) -> None:
    """The strategy's own test, by brute force: every element lies in exactly one chunk."""
    shape, chunks = case
    owners = [
        sum(
            all(o <= p < o + n for p, o, n in zip(point, c.offsets, c.sizes, strict=True))
            for c in chunks
        )
        for point in itertools.product(*map(range, shape))
    ]
    assert owners == [1] * len(owners)
    assert all(len(c.offsets) == len(c.sizes) == len(shape) for c in chunks)


def tensor(size: tuple[int, ...], *chunks: tuple[tuple[int, ...], tuple[int, ...]]) -> Metadata:
    parts = [ChunkStorageMetadata(torch.Size(o), torch.Size(s)) for o, s in chunks]
    return Metadata({"w.0": TensorStorageMetadata(TensorProperties(), torch.Size(size), parts)})


@PROPERTY
@given(metadatas(valid=True))
def test_validate_accepts_complete_disjoint_layouts(md: Metadata) -> None:
    validate(md)
    validate(loads(dumps(md)))


@PROPERTY
@given(tensor_entries(valid=True), st.data())
def test_validate_reports_a_dropped_chunk_as_a_hole(
    entry: TensorStorageMetadata, data: st.DataObject
) -> None:
    full = [i for i, c in enumerate(entry.chunks) if all(c.sizes)]
    assume(full)  # only a chunk holding elements leaves a hole when dropped
    dropped = entry.chunks.pop(data.draw(st.sampled_from(full)))
    md = Metadata({"t": entry})
    with pytest.raises(InvalidMetadataError, match=r"^tensor 't' .*found holes at ") as info:
        validate(md)
    assert f"offsets={tuple(dropped.offsets)}" in str(info.value)
    validate(md, allow_partial=True)


@PROPERTY
@given(tensor_entries(valid=True), st.data())
def test_validate_reports_a_repeated_chunk_as_an_overlap(
    entry: TensorStorageMetadata, data: st.DataObject
) -> None:
    full = [i for i, c in enumerate(entry.chunks) if all(c.sizes)]
    assume(full)  # zero-size chunks never overlap, not even their own copies
    entry.chunks.append(entry.chunks[data.draw(st.sampled_from(full))])
    with pytest.raises(InvalidMetadataError, match="expected disjoint chunks"):
        validate(Metadata({"t": entry}), allow_partial=True)


def test_validate_accepts_0dim_and_zero_size_tensors() -> None:
    validate(tensor((), ((), ())))
    validate(tensor((0, 4)))  # nothing to cover
    validate(tensor((0, 4), ((0, 0), (0, 4))))
    validate(
        tensor((3, 4), ((0, 0), (3, 4)), ((3, 0), (0, 4)))
    )  # an empty chunk at the end is in bounds


def test_validate_out_of_bounds_names_chunk_and_box() -> None:
    md = tensor((4, 4), ((0, 0), (2, 4)), ((2, 1), (2, 4)))
    with pytest.raises(InvalidMetadataError) as info:
        validate(md)
    assert str(info.value) == (
        "tensor 'w.0' of size (4, 4): chunk 1 offsets=(2, 1) sizes=(2, 4): "
        "expected 2 dims within the tensor, found ends (4, 5)"
    )


def test_validate_wrong_rank_chunk() -> None:
    with pytest.raises(
        InvalidMetadataError, match=r"chunk 0 offsets=\(0,\) sizes=\(4,\): expected 2 dims"
    ):
        validate(tensor((4, 4), ((0,), (4,))))
    with pytest.raises(
        InvalidMetadataError, match=r"chunk 0 .*: expected 2 non-negative offsets and sizes"
    ):
        validate(tensor((4, 4), ((0,), (4, 4))))
    with pytest.raises(
        InvalidMetadataError, match=r"tensor 'w.0' of size \(4, -1\): expected sizes >= 0"
    ):
        validate(tensor((4, -1)))


def test_validate_overlap_names_both_chunks_and_the_common_box() -> None:
    md = tensor((4, 4), ((0, 0), (4, 2)), ((0, 2), (4, 2)), ((3, 1), (1, 2)))
    with pytest.raises(InvalidMetadataError) as info:
        validate(md)
    assert str(info.value) == (
        "tensor 'w.0' of size (4, 4): expected disjoint chunks, found chunk 0 offsets=(0, 0) "
        "sizes=(4, 2) and chunk 2 offsets=(3, 1) sizes=(1, 2) overlapping in offsets=(3, 1) "
        "sizes=(1, 1)"
    )


def test_validate_holes_give_coordinates_unless_partial() -> None:
    md = tensor((4, 4), ((0, 0), (2, 4)))
    with pytest.raises(InvalidMetadataError) as info:
        validate(md)
    assert str(info.value) == (
        "tensor 'w.0' of size (4, 4): expected its 1 chunks to cover it, found holes at "
        "offsets=(2, 0) sizes=(2, 4)"
    )
    validate(md, allow_partial=True)
    with pytest.raises(InvalidMetadataError, match=r"found holes at offsets=\(\) sizes=\(\)"):
        validate(tensor(()))


def test_validate_first_problem_wins() -> None:
    md = tensor((4,), ((0,), (5,)))
    md.state_dict_metadata["a"] = tensor((4,), ((0,), (2,))).state_dict_metadata["w.0"]
    with pytest.raises(InvalidMetadataError, match=r"^tensor 'w\.0'"):
        validate(md)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            MetadataIndex("nope", [0, 0]),
            "fqn='nope' offset=torch.Size([0, 0]): expected a state_dict_metadata entry",
        ),
        (
            MetadataIndex("w.0", [1, 0]),
            "fqn='w.0' offset=torch.Size([1, 0]): expected the offsets of one of the tensor's 4",
        ),
        (
            MetadataIndex("w.0"),
            "fqn='w.0' offset=None: expected the offsets of one of the tensor's 4 chunks",
        ),
        (
            MetadataIndex("step", [0]),
            "fqn='step' offset=torch.Size([0]): expected no offset for a bytes entry",
        ),
        ("w.0", "storage_data: expected MetadataIndex keys, found string 'w.0'"),
    ],
)
def test_validate_storage_keys_name_existing_items(key: object, message: str) -> None:
    md = sample()
    validate(md)
    md.storage_data[key] = ItemLocation("f", 0, 0)
    with pytest.raises(InvalidMetadataError) as info:
        validate(md)
    assert message in str(info.value)


def test_validate_checks_keys_of_foreign_storage_data_too() -> None:
    md = sample()
    md.storage_data = {MetadataIndex("w.0", [0, 0]): object(), "prefix": "__0_"}
    validate(md)  # another backend's values are not judged, and non-index keys are skipped
    md.storage_data[MetadataIndex("gone")] = object()
    with pytest.raises(InvalidMetadataError, match="fqn='gone'"):
        validate(md)
