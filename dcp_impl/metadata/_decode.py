"""Decoding: a parsed metadata document (version 1, 2 or 3) -> ``Metadata``.

:func:`decode` checks that every object has exactly the keys docs/format.md gives it and
every value its type and range, raising a :class:`Problem` at the JSON path of the first bad
value. The two versions differ only in a tensor's ``chunks`` and in ``storage_data``: version
1 writes one object per chunk and per item (decoded here), versions 2 and 3 columns
(:mod:`dcp_impl.metadata._columns`); version 3 adds piece checksums (rule D15).
:func:`parse` (:mod:`dcp_impl.metadata._parse`) comes first.
"""

from __future__ import annotations

import dataclasses
import json
from typing import cast

import torch
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
from dcp_impl.errors import InvalidMetadataError, UnknownDtypeError
from dcp_impl.metadata._columns import decode_chunks, decode_storage
from dcp_impl.metadata._parse import json_object, parse
from dcp_impl.metadata._values import (
    EXPECTED_LAYOUT,
    EXPECTED_MEMORY_FORMAT,
    FORMAT_NAME,
    FORMAT_VERSION,
    LAYOUTS,
    MEMORY_FORMATS,
    MISSING,
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
    whole_checksum,
)

__all__ = ["decode", "parse"]

_READS = (1, 2, 3, FORMAT_VERSION)  # every version a dcp_impl ever wrote (docs/format.md §1.5)
_STRIDES_VERSION = 4  # the first with the properties' strides (D16)
_TOP_KEYS = frozenset(
    {"format", "format_version", "version", "state_dict_metadata"}
    | {"planner_data", "storage_data", "storage_meta"}
)
_TENSOR_KEYS = frozenset({"kind", "properties", "size", "chunks"})
_BYTES_KEYS = frozenset({"kind"})
_CHUNK_KEYS = frozenset({"offsets", "sizes"})
_PROPERTY_KEYS = frozenset({"dtype", "layout", "requires_grad", "memory_format", "pin_memory"})
_PROPERTY_KEYS_V4 = _PROPERTY_KEYS | {"strides"}
# torch 2.15 added TensorProperties.strides; a reader on an older torch cannot hold them (D16)
_TORCH_HAS_STRIDES = "strides" in {f.name for f in dataclasses.fields(TensorProperties)}
_ITEM_KEYS = frozenset({"index", "location"})
_INDEX_KEYS = frozenset({"fqn", "offset", "index"})
_LOCATION_KEYS = frozenset({"path", "offset", "length", "checksum"})
_STORAGE_META_KEYS = frozenset({"checkpoint_id", "save_id", "load_id", "modules"})


def decode(doc: object) -> Metadata:
    """The Metadata a parsed document describes; raises :class:`Problem`."""
    top = json_object(doc)
    fmt = top.get("format", MISSING)
    if fmt != FORMAT_NAME:
        raise Problem(json.dumps(FORMAT_NAME), fmt).at(".format")
    version = top.get("format_version", MISSING)
    if type(version) is not int:
        raise Problem("an integer format version", version).at(".format_version")
    if version not in _READS:
        why = (
            "written by a newer dcp_impl; upgrade dcp_impl to read it"
            if version > FORMAT_VERSION
            else "no dcp_impl writes that version"
        )
        expected = f"expected one of {list(_READS)} (the versions this reader supports)"
        raise Problem(f"{expected}, found {version}: {why}", None, raw=True).at(".format_version")
    json_object(top, _TOP_KEYS)
    entries = field(
        lambda node: _entries(node, version), top["state_dict_metadata"], ".state_dict_metadata"
    )
    pieces = version >= 3
    storage = (
        _storage_data if version == 1 else lambda node: decode_storage(node, entries, pieces=pieces)
    )
    return Metadata(
        state_dict_metadata=entries,
        planner_data=field(_planner_data, top["planner_data"], ".planner_data"),
        storage_data=field(storage, top["storage_data"], ".storage_data"),
        storage_meta=field(_storage_meta, top["storage_meta"], ".storage_meta"),
        version=field(opt_string, top["version"], ".version"),
    )


def _entries(node: object, version: int) -> dict[str, TensorStorageMetadata | BytesStorageMetadata]:
    out: dict[str, TensorStorageMetadata | BytesStorageMetadata] = {}
    for fqn, entry in json_object(node).items():
        try:
            out[string(fqn)] = _entry(entry, version)
        except Problem as problem:
            raise problem.at(key_step(fqn)) from problem.__cause__
    return out


def _entry(node: object, version: int) -> TensorStorageMetadata | BytesStorageMetadata:
    kind = json_object(node).get("kind", MISSING)
    if kind == "bytes":
        json_object(node, _BYTES_KEYS)
        return BytesStorageMetadata()
    if kind != "tensor":
        raise Problem('kind "tensor" or "bytes"', kind).at(".kind")
    obj = json_object(node, _TENSOR_KEYS)
    size = field(_dims, obj["size"], ".size")
    properties = field(
        lambda node: _properties(node, len(size), version), obj["properties"], ".properties"
    )
    if version == 1:
        chunks = _chunks_v1(obj["chunks"], len(size))
    else:
        chunks = field(lambda node: decode_chunks(node, len(size)), obj["chunks"], ".chunks")
    return TensorStorageMetadata(properties, size, chunks)


def _chunks_v1(node: object, ndim: int) -> list[ChunkStorageMetadata]:
    if type(node) is not list:
        raise Problem("a JSON array of chunks", node).at(".chunks")
    chunks = []
    for i, chunk in enumerate(node):
        try:
            fields = json_object(chunk, _CHUNK_KEYS)
            check_chunk(fields["offsets"], fields["sizes"], list, ndim)
        except Problem as problem:
            raise problem.at(f"[{i}]").at(".chunks") from None
        chunks.append(
            ChunkStorageMetadata(torch.Size(fields["offsets"]), torch.Size(fields["sizes"]))
        )
    return chunks


def _dims(node: object) -> torch.Size:
    check_dims(node, list)
    return torch.Size(node)  # type: ignore[arg-type]


def _properties(node: object, ndim: int, version: int) -> TensorProperties:
    obj = json_object(node, _PROPERTY_KEYS_V4 if version >= _STRIDES_VERSION else _PROPERTY_KEYS)
    name = string_at(obj["dtype"], ".dtype")
    try:
        dtype = dtypes.by_name(name).torch_dtype
    except UnknownDtypeError as err:
        raise Problem("a dtype name from dcp_impl.dtypes", name).at(".dtype") from err
    layout_name = string_at(obj["layout"], ".layout")
    layout = member(LAYOUTS, layout_name, EXPECTED_LAYOUT, ".layout")
    format_name = string_at(obj["memory_format"], ".memory_format")
    memory_format = member(MEMORY_FORMATS, format_name, EXPECTED_MEMORY_FORMAT, ".memory_format")
    properties = TensorProperties(
        dtype=dtype,
        layout=layout,
        requires_grad=field(flag, obj["requires_grad"], ".requires_grad"),
        memory_format=memory_format,
        pin_memory=field(flag, obj["pin_memory"], ".pin_memory"),
    )
    strides = field(lambda v: _strides(v, ndim), obj.get("strides"), ".strides")
    if _TORCH_HAS_STRIDES:
        properties.strides = strides  # type: ignore[attr-defined,unused-ignore]
    return properties


def _strides(node: object, ndim: int) -> tuple[int, ...] | None:
    if node is None:
        return None
    check_dims(node, list, ndim=ndim)
    return tuple(cast("list[int]", node))


def _planner_data(node: object) -> dict[str, tuple[str | int, ...]] | None:
    if node is None:
        return None
    out: dict[str, tuple[str | int, ...]] = {}
    for fqn, obj_path in json_object(node).items():
        try:
            if type(obj_path) is not list:
                raise Problem("a JSON array of strings and integers", obj_path)
            out[string(fqn)] = tuple(path_item(item, i) for i, item in enumerate(obj_path))
        except Problem as problem:
            raise problem.at(key_step(fqn)) from None
    return out


def _storage_data(node: object) -> dict[MetadataIndex, ItemLocation] | None:
    if node is None:
        return None
    if type(node) is not list:
        raise Problem("null or a JSON array of storage items", node)
    out: dict[MetadataIndex, ItemLocation] = {}
    for i, item in enumerate(node):
        try:
            index, location = _storage_item(item)
            if index in out:
                first = list(out).index(index)
                raise Problem(
                    f"a new fqn and offset, found those of item [{first}] again", None, raw=True
                ).at(".index")
        except Problem as problem:
            raise problem.at(f"[{i}]") from None
        out[index] = location
    return out


def _storage_item(node: object) -> tuple[MetadataIndex, ItemLocation]:
    obj = json_object(node, _ITEM_KEYS)
    step = ".index"
    try:
        index = json_object(obj["index"], _INDEX_KEYS)
        step = ".index.fqn"
        fqn = string(index["fqn"])
        step = ".index.offset"
        offset = index["offset"]
        if offset is not None:
            check_dims(offset, list)  # MetadataIndex makes it a torch.Size
        step = ".index.index"
        position = None if index["index"] is None else count(index["index"])
        step = ".location"
        loc = json_object(obj["location"], _LOCATION_KEYS)
        location = ItemLocation(loc["path"], loc["offset"], loc["length"], loc["checksum"])
        step = ".location.checksum"
        whole_checksum(location.checksum)  # piece checksums came with version 3
    except Problem as problem:
        raise problem.at(step) from None
    except InvalidMetadataError as err:
        if not isinstance(err.__cause__, Problem):  # ItemLocation keeps its path-less problem
            raise
        raise err.__cause__.at(step) from None
    return MetadataIndex(fqn, offset, position), location


def _storage_meta(node: object) -> StorageMeta | None:
    if node is None:
        return None
    obj = json_object(node, _STORAGE_META_KEYS)
    if type(obj["modules"]) is not list:
        raise Problem("a JSON array of strings", obj["modules"]).at(".modules")
    return StorageMeta(
        checkpoint_id=field(opt_string, obj["checkpoint_id"], ".checkpoint_id"),
        save_id=field(opt_string, obj["save_id"], ".save_id"),
        load_id=field(opt_string, obj["load_id"], ".load_id"),
        modules=[field(string, m, f".modules[{i}]") for i, m in enumerate(obj["modules"])],
    )
