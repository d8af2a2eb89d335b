"""Encoding: a torch ``Metadata`` -> the JSON-ready document of docs/format.md (version 3).

:func:`encode` checks every value on the way (a custom planner_data object or a
storage value other than :class:`ItemLocation` is a :class:`Problem` at its path);
:func:`dcp_impl.metadata.dumps` serialises the result. A tensor's chunks and the storage
items are written as columns (docs/format.md §1.2); the chunks' values are checked in bulk,
and only a failing check walks them one by one, to name the first bad value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from itertools import chain, repeat
from typing import Any, cast

from torch.distributed._shard.sharded_tensor.metadata import (
    TensorProperties as LegacyTensorProperties,
)
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)

from dcp_impl import dtypes
from dcp_impl.errors import UnknownDtypeError
from dcp_impl.metadata._columns import counts_ok
from dcp_impl.metadata._values import (
    EXPECTED_LAYOUT,
    EXPECTED_MEMORY_FORMAT,
    FORMAT_NAME,
    FORMAT_VERSION,
    LAYOUT_NAMES,
    MEMORY_FORMAT_NAMES,
    ItemLocation,
    Problem,
    check_chunk,
    check_dims,
    count,
    field,
    flag,
    key_step,
    member,
    opt_string,
    path_item,
    string,
    string_at,
)

__all__ = ["encode"]

_COLUMNS = ("entry", "chunk", "index", "file", "offset", "length", "checksum")


def encode(md: Metadata) -> dict[str, Any]:
    """The document for ``md``, keys in the format's order; raises :class:`Problem`."""
    if not isinstance(md, Metadata):
        raise Problem("a torch.distributed.checkpoint.metadata.Metadata", md)
    if not isinstance(md.state_dict_metadata, dict):
        raise Problem("a dict", md.state_dict_metadata).at(".state_dict_metadata")
    entries: dict[str, Any] = {}
    for fqn, entry in md.state_dict_metadata.items():
        try:
            entries[string(fqn)] = _entry(entry)
        except Problem as problem:
            raise problem.at(key_step(fqn)).at(".state_dict_metadata") from problem.__cause__
    smd = md.state_dict_metadata
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "version": field(opt_string, md.version, ".version"),
        "state_dict_metadata": entries,
        "planner_data": field(_planner_data, md.planner_data, ".planner_data"),
        "storage_data": field(lambda d: _storage_data(d, smd), md.storage_data, ".storage_data"),
        "storage_meta": field(_storage_meta, md.storage_meta, ".storage_meta"),
    }


def _entry(entry: object) -> dict[str, Any]:
    if isinstance(entry, BytesStorageMetadata):
        return {"kind": "bytes"}
    if not isinstance(entry, TensorStorageMetadata):
        raise Problem("TensorStorageMetadata or BytesStorageMetadata", entry)
    field(_dims, entry.size, ".size")
    props = field(lambda p: _properties(p, len(entry.size)), entry.properties, ".properties")
    if not isinstance(entry.chunks, list):
        raise Problem("a list of ChunkStorageMetadata", entry.chunks).at(".chunks")
    chunks = _chunks(entry.chunks, len(entry.size))
    return {"kind": "tensor", "properties": props, "size": list(entry.size), "chunks": chunks}


def _chunks(chunks: list[Any], ndim: int) -> dict[str, list[Any]]:
    """The chunk table: offsets flat, each chunk's sizes a reference to a distinct row."""
    offsets = sizes = []
    if all(map(isinstance, chunks, repeat(ChunkStorageMetadata))):
        offsets = [c.offsets for c in chunks]
        sizes = [c.sizes for c in chunks]
    if len(offsets) != len(chunks) or not (_dims_ok(offsets, ndim) and _dims_ok(sizes, ndim)):
        _first_bad_chunk(chunks, ndim)
    table: dict[tuple[int, ...], int] = {}
    refs = [table.setdefault(s, len(table)) for s in sizes]
    return {
        "offsets": list(chain.from_iterable(offsets)),
        "sizes": refs,
        "size_table": [list(s) for s in table],
    }


def _dims_ok(dims: list[Any], ndim: int) -> bool:
    if not all(map(isinstance, dims, repeat(tuple))) or set(map(len, dims)) - {ndim}:
        return False
    return counts_ok(list(chain.from_iterable(dims)))


def _first_bad_chunk(chunks: list[Any], ndim: int) -> None:
    for i, chunk in enumerate(chunks):
        try:
            if not isinstance(chunk, ChunkStorageMetadata):
                raise Problem("a ChunkStorageMetadata", chunk)
            check_chunk(chunk.offsets, chunk.sizes, tuple, ndim)
        except Problem as problem:
            raise problem.at(f"[{i}]").at(".chunks") from None
    raise AssertionError("unreachable: a bulk check failed, so some chunk fails alone")


def _dims(value: object) -> None:
    check_dims(value, tuple)


def _properties(props: object, ndim: int) -> dict[str, Any]:
    # torch still accepts its legacy sharded-tensor class here (same fields); so do we.
    if not isinstance(props, TensorProperties | LegacyTensorProperties):
        raise Problem("a TensorProperties", props)
    try:
        dtype = dtypes.by_torch(props.dtype).name
    except UnknownDtypeError as err:
        raise Problem("a dtype from dcp_impl.dtypes", props.dtype).at(".dtype") from err
    layout = member(LAYOUT_NAMES, props.layout, EXPECTED_LAYOUT, ".layout")
    memory_format = member(
        MEMORY_FORMAT_NAMES, props.memory_format, EXPECTED_MEMORY_FORMAT, ".memory_format"
    )
    return {
        "dtype": dtype,
        "layout": layout,
        "requires_grad": field(flag, props.requires_grad, ".requires_grad"),
        "memory_format": memory_format,
        "pin_memory": field(flag, props.pin_memory, ".pin_memory"),
        # torch 2.15 added the saving tensor's strides; older torch has no such field (D16)
        "strides": field(lambda v: _strides(v, ndim), getattr(props, "strides", None), ".strides"),
    }


def _strides(value: object, ndim: int) -> list[int] | None:
    if value is None:
        return None
    check_dims(value, tuple, ndim=ndim)
    return list(cast("tuple[int, ...]", value))


def _planner_data(data: object) -> dict[str, list[str | int]] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise Problem("None or a flatten mapping dict[str, tuple[str | int, ...]]", data)
    out: dict[str, list[str | int]] = {}
    for fqn, obj_path in data.items():
        try:
            if not isinstance(obj_path, tuple):
                raise Problem("a tuple of str | int", obj_path)
            out[string(fqn)] = [path_item(item, i) for i, item in enumerate(obj_path)]
        except Problem as problem:
            raise problem.at(key_step(fqn)) from None
    return out


def _storage_data(data: object, entries: Mapping[str, Any]) -> dict[str, list[Any]] | None:
    """The storage columns; a key is written as its entry's position and its chunk's."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise Problem("None or a dict[MetadataIndex, ItemLocation]", data)
    positions = {fqn: i for i, fqn in enumerate(entries)}
    chunk_at: dict[str, dict[tuple[int, ...], int]] = {}
    files: dict[str, int] = {}
    columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
    entry, chunk, index, file = (columns[n] for n in _COLUMNS[:4])
    for i, (key, loc) in enumerate(data.items()):
        try:
            if not isinstance(key, MetadataIndex):
                raise Problem("a MetadataIndex key", key).at(".index")
            if not isinstance(loc, ItemLocation):
                raise Problem("an ItemLocation value", loc).at(".location")
            position = positions.get(key.fqn) if type(key.fqn) is str else None
            if position is None:
                string_at(key.fqn, ".index.fqn")
                raise Problem("the fqn of a state_dict_metadata entry", key.fqn).at(".index.fqn")
            chunk.append(_chunk_ref(key.offset, key.fqn, entries, chunk_at))
            if key.index is not None:
                field(count, key.index, ".index.index")
        except Problem as problem:
            raise problem.at(f"[{i}]") from None
        entry.append(position)
        index.append(key.index)
        file.append(files.setdefault(loc.path, len(files)))
    locations = list(data.values())
    columns["offset"] = [loc.offset for loc in locations]
    columns["length"] = [loc.length for loc in locations]
    columns["checksum"] = [loc.checksum for loc in locations]
    return {"files": list(files), **columns}


def _chunk_ref(
    offset: object, fqn: str, entries: Mapping[str, Any], chunk_at: dict[str, dict[Any, int]]
) -> int | None:
    """The position of the chunk of ``entries[fqn]`` whose offsets are ``offset`` (the first)."""
    entry = entries[fqn]
    found = None
    if not isinstance(entry, TensorStorageMetadata):
        if offset is None:
            return None
        expected = "None (the entry is bytes)"
    else:
        expected = f"the offsets of one of the tensor's {len(entry.chunks)} chunks"
        if offset is not None:
            field(_dims, offset, ".index.offset")
            if fqn not in chunk_at:
                chunk_at[fqn] = {}
                for i, c in enumerate(entry.chunks):
                    chunk_at[fqn].setdefault(tuple(c.offsets), i)
            found = chunk_at[fqn].get(cast("tuple[int, ...]", offset))
    if found is None:
        raise Problem(expected, offset).at(".index.offset")
    return found


def _storage_meta(meta: object) -> dict[str, Any] | None:
    if meta is None:
        return None
    if not isinstance(meta, StorageMeta):
        raise Problem("None or a StorageMeta", meta)
    checkpoint_id = meta.checkpoint_id
    if isinstance(checkpoint_id, os.PathLike):
        checkpoint_id = os.fspath(checkpoint_id)  # documented: a PathLike is stored as its str
    if not isinstance(meta.modules, list):
        raise Problem("a list of str", meta.modules).at(".modules")
    return {
        "checkpoint_id": field(opt_string, checkpoint_id, ".checkpoint_id"),
        "save_id": field(opt_string, meta.save_id, ".save_id"),
        "load_id": field(opt_string, meta.load_id, ".load_id"),
        "modules": [field(string, m, f".modules[{i}]") for i, m in enumerate(meta.modules)],
    }
