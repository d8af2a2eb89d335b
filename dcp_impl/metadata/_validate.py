"""Geometry checks of a decoded ``Metadata``: chunk bounds, overlaps, coverage, storage keys."""

from __future__ import annotations

import math
from typing import Any

from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, TensorStorageMetadata

from dcp_impl import layout
from dcp_impl.errors import InvalidMetadataError, LayoutMismatchError
from dcp_impl.metadata._values import ItemLocation, show

__all__ = ["validate", "validate_storage_keys"]


def validate(metadata: Metadata, *, allow_partial: bool = False) -> None:
    """Check chunk geometry and storage keys; raise InvalidMetadataError at the first problem.

    Every tensor's chunks must have the tensor's rank, lie inside it and not
    overlap; unless ``allow_partial``, they must cover it completely. Where
    ``storage_data`` is a dict keyed by MetadataIndex, every key must name an
    existing entry (and, for tensors, one of its chunks' offsets).
    """
    for fqn, entry in metadata.state_dict_metadata.items():
        if isinstance(entry, TensorStorageMetadata):
            _validate_tensor(fqn, entry, allow_partial=allow_partial)
    validate_storage_keys(metadata)


def validate_storage_keys(metadata: Metadata) -> None:
    """The storage-key check of :func:`validate` alone (see there)."""
    if isinstance(metadata.storage_data, dict):
        _validate_storage_keys(metadata.state_dict_metadata, metadata.storage_data)


def _show_box(box: layout.Box) -> str:
    return f"offsets={box.offsets} sizes={box.sizes}"


def _validate_tensor(fqn: str, entry: TensorStorageMetadata, *, allow_partial: bool) -> None:
    shape = tuple(entry.size)
    name = f"tensor {fqn!r} of size {shape}"
    if any(type(n) is not int or n < 0 for n in shape):
        raise InvalidMetadataError(f"{name}: expected sizes >= 0")
    boxes = []
    for i, chunk in enumerate(entry.chunks):
        try:
            box = layout.Box.of(chunk)
        except (ValueError, TypeError) as err:
            raise InvalidMetadataError(
                f"{name}: chunk {i} offsets={tuple(chunk.offsets)} sizes={tuple(chunk.sizes)}: "
                f"expected {len(shape)} non-negative offsets and sizes"
            ) from err
        if layout.out_of_bounds(shape, box):
            raise InvalidMetadataError(
                f"{name}: chunk {i} {_show_box(box)}: expected {len(shape)} dims within the "
                f"tensor, found ends {box.ends}"
            )
        boxes.append(box)
    if not allow_partial and layout.tiles(shape, boxes):
        return  # the common case, in linear time: an exact partition
    try:
        pair = layout.first_overlap(boxes)
    except LayoutMismatchError as err:
        raise InvalidMetadataError(f"{name}: {err}") from err
    if pair is not None:
        i, j = pair
        common = layout.intersect(boxes[i], boxes[j])
        assert common is not None  # first_overlap found these two to overlap
        raise InvalidMetadataError(
            f"{name}: expected disjoint chunks, found chunk {i} {_show_box(boxes[i])} and "
            f"chunk {j} {_show_box(boxes[j])} overlapping in {_show_box(common)}"
        )
    if allow_partial or sum(box.numel for box in boxes) == math.prod(shape):
        return  # disjoint boxes inside the tensor whose volumes add up to it cover it
    try:
        missing = layout.holes(shape, boxes)
    except LayoutMismatchError as err:
        raise InvalidMetadataError(f"{name}: expected its chunks to cover it: {err}") from err
    if missing:
        shown = "; ".join(_show_box(hole) for hole in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InvalidMetadataError(
            f"{name}: expected its {len(boxes)} chunks to cover it, found holes at {shown}{more}"
        )


def _validate_storage_keys(entries: dict[str, Any], storage: dict[Any, Any]) -> None:
    chunk_offsets: dict[str, set[tuple[int, ...]]] = {}
    for key, value in storage.items():
        if not isinstance(key, MetadataIndex):
            if isinstance(value, ItemLocation):
                raise InvalidMetadataError(
                    f"storage_data: expected MetadataIndex keys, found {show(key)}"
                )
            continue  # another backend's storage_data; not ours to judge
        where = f"storage_data key fqn={key.fqn!r} offset={key.offset}"
        entry = entries.get(key.fqn)
        if entry is None:
            raise InvalidMetadataError(f"{where}: expected a state_dict_metadata entry, found none")
        if isinstance(entry, TensorStorageMetadata):
            if key.fqn not in chunk_offsets:
                chunk_offsets[key.fqn] = {tuple(c.offsets) for c in entry.chunks}
            if key.offset is None or tuple(key.offset) not in chunk_offsets[key.fqn]:
                raise InvalidMetadataError(
                    f"{where}: expected the offsets of one of the tensor's "
                    f"{len(entry.chunks)} chunks, found no chunk there"
                )
        elif key.offset is not None:
            raise InvalidMetadataError(f"{where}: expected no offset for a bytes entry")
