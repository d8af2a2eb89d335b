"""Encoding: a torch ``Metadata`` -> the JSON-ready document of docs/format.md.

:func:`encode` checks every value on the way (a custom planner_data object or a
storage value other than :class:`ItemLocation` is a :class:`Problem` at its path);
:func:`dcp_impl.metadata.dumps` serialises the result.
"""

from __future__ import annotations

import os
from typing import Any

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
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "version": field(opt_string, md.version, ".version"),
        "state_dict_metadata": entries,
        "planner_data": field(_planner_data, md.planner_data, ".planner_data"),
        "storage_data": field(_storage_data, md.storage_data, ".storage_data"),
        "storage_meta": field(_storage_meta, md.storage_meta, ".storage_meta"),
    }


def _entry(entry: object) -> dict[str, Any]:
    if isinstance(entry, BytesStorageMetadata):
        return {"kind": "bytes"}
    if not isinstance(entry, TensorStorageMetadata):
        raise Problem("TensorStorageMetadata or BytesStorageMetadata", entry)
    props = field(_properties, entry.properties, ".properties")
    field(_dims, entry.size, ".size")
    if not isinstance(entry.chunks, list):
        raise Problem("a list of ChunkStorageMetadata", entry.chunks).at(".chunks")
    ndim = len(entry.size)
    chunks = []
    for i, chunk in enumerate(entry.chunks):
        try:
            if not isinstance(chunk, ChunkStorageMetadata):
                raise Problem("a ChunkStorageMetadata", chunk)
            check_chunk(chunk.offsets, chunk.sizes, tuple, ndim)
        except Problem as problem:
            raise problem.at(f"[{i}]").at(".chunks") from None
        chunks.append({"offsets": list(chunk.offsets), "sizes": list(chunk.sizes)})
    return {"kind": "tensor", "properties": props, "size": list(entry.size), "chunks": chunks}


def _dims(value: object) -> None:
    check_dims(value, tuple)


def _properties(props: object) -> dict[str, Any]:
    if not isinstance(props, TensorProperties):
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
    }


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


def _storage_data(data: object) -> list[dict[str, Any]] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise Problem("None or a dict[MetadataIndex, ItemLocation]", data)
    out = []
    for i, (index, loc) in enumerate(data.items()):
        try:
            if not isinstance(index, MetadataIndex):
                raise Problem("a MetadataIndex key", index).at(".index")
            if not isinstance(loc, ItemLocation):
                raise Problem("an ItemLocation value", loc).at(".location")
            fqn = string_at(index.fqn, ".index.fqn")
            if index.offset is not None:
                field(_dims, index.offset, ".index.offset")
            if index.index is not None:
                field(count, index.index, ".index.index")
        except Problem as problem:
            raise problem.at(f"[{i}]") from None
        offset = None if index.offset is None else list(index.offset)
        out.append(
            {
                "index": {"fqn": fqn, "offset": offset, "index": index.index},
                "location": {
                    "path": loc.path,
                    "offset": loc.offset,
                    "length": loc.length,
                    "checksum": loc.checksum,
                },
            }
        )
    return out


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
