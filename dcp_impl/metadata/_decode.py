"""Decoding: bounded, strict parsing of a metadata document and its conversion to ``Metadata``.

:func:`parse` refuses oversized input before parsing and accepts only UTF-8 JSON with
unique keys and no NaN/Infinity literals; :func:`decode` checks that every object has
exactly the keys docs/format.md gives it and every value its type and range, raising a
:class:`Problem` at the JSON path of the first bad value.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

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
)

__all__ = ["decode", "parse"]

_TOP_KEYS = frozenset(
    {"format", "format_version", "version", "state_dict_metadata"}
    | {"planner_data", "storage_data", "storage_meta"}
)
_TENSOR_KEYS = frozenset({"kind", "properties", "size", "chunks"})
_BYTES_KEYS = frozenset({"kind"})
_CHUNK_KEYS = frozenset({"offsets", "sizes"})
_PROPERTY_KEYS = frozenset({"dtype", "layout", "requires_grad", "memory_format", "pin_memory"})
_ITEM_KEYS = frozenset({"index", "location"})
_INDEX_KEYS = frozenset({"fqn", "offset", "index"})
_LOCATION_KEYS = frozenset({"path", "offset", "length", "checksum"})
_STORAGE_META_KEYS = frozenset({"checkpoint_id", "save_id", "load_id", "modules"})


# --- parsing ----------------------------------------------------------------------------------


class _DuplicateKeys(dict[str, Any]):
    """A parsed JSON object that repeated a key; the decoder reports it with its path."""

    __slots__ = ("duplicate",)
    duplicate: str


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _DuplicateKeys(obj)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _reject_constant(name: str) -> NoReturn:
    raise InvalidMetadataError(f"metadata: expected JSON numbers only, found the literal {name}")


def parse(text: str | bytes | bytearray, *, limit: int) -> object:
    """The JSON value of ``text``, refused unparsed when over ``limit`` UTF-8 bytes.

    Raises :class:`InvalidMetadataError` (not a :class:`Problem`: there is no path yet).
    """
    if isinstance(text, bytes | bytearray):
        size = len(text)
    elif isinstance(text, str):
        size = len(text)
        if size <= limit and not text.isascii():
            size = len(text.encode("utf-8", "surrogatepass"))
    else:
        raise InvalidMetadataError(f"metadata: expected str or bytes, found {type(text).__name__}")
    if size > limit:
        raise InvalidMetadataError(
            f"metadata: expected at most MAX_METADATA_BYTES={limit} bytes, "
            f"found {size}; refusing to parse it"
        )
    try:
        if not isinstance(text, str):
            text = bytes(text).decode("utf-8")
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_reject_constant)
    except InvalidMetadataError:
        raise
    except UnicodeDecodeError as err:
        raise InvalidMetadataError(f"metadata: expected UTF-8, found {err}") from err
    except ValueError as err:  # JSONDecodeError, or an integer literal of > 4300 digits
        raise InvalidMetadataError(f"metadata: expected a JSON document, found {err}") from err
    except RecursionError as err:
        raise InvalidMetadataError(
            "metadata: expected a JSON document, found nesting too deep"
        ) from err


# --- decoding ---------------------------------------------------------------------------------


def _object(node: object, keys: frozenset[str] | None = None) -> dict[str, Any]:
    """``node`` as a JSON object with no repeated key and, if given, exactly ``keys``."""
    if type(node) is _DuplicateKeys:
        dup = json.dumps(node.duplicate)
        raise Problem(f"an object with unique keys, found {dup} twice", None, raw=True)
    if type(node) is not dict:
        raise Problem("a JSON object", node)
    if keys is not None and node.keys() != keys:
        unknown = sorted(node.keys() - keys)
        if unknown:
            raise Problem(
                f"only the keys {sorted(keys)}, found unknown key {json.dumps(unknown[0])}",
                None,
                raw=True,
            )
        missing = sorted(keys - node.keys())
        raise Problem(f"the key {json.dumps(missing[0])}, found it missing", None, raw=True)
    return node


def decode(doc: object) -> Metadata:
    """The Metadata a parsed document describes; raises :class:`Problem`."""
    top = _object(doc)
    fmt = top.get("format", MISSING)
    if fmt != FORMAT_NAME:
        raise Problem(json.dumps(FORMAT_NAME), fmt).at(".format")
    version = top.get("format_version", MISSING)
    if type(version) is not int:
        raise Problem("an integer format version", version).at(".format_version")
    if version != FORMAT_VERSION:
        why = (
            "written by a newer dcp_impl; upgrade dcp_impl to read it"
            if version > FORMAT_VERSION
            else "no dcp_impl writes that version"
        )
        expected = f"expected {FORMAT_VERSION} (the version this reader supports)"
        raise Problem(f"{expected}, found {version}: {why}", None, raw=True).at(".format_version")
    _object(top, _TOP_KEYS)
    return Metadata(
        state_dict_metadata=field(_entries, top["state_dict_metadata"], ".state_dict_metadata"),
        planner_data=field(_planner_data, top["planner_data"], ".planner_data"),
        storage_data=field(_storage_data, top["storage_data"], ".storage_data"),
        storage_meta=field(_storage_meta, top["storage_meta"], ".storage_meta"),
        version=field(opt_string, top["version"], ".version"),
    )


def _entries(node: object) -> dict[str, TensorStorageMetadata | BytesStorageMetadata]:
    out: dict[str, TensorStorageMetadata | BytesStorageMetadata] = {}
    for fqn, entry in _object(node).items():
        try:
            out[string(fqn)] = _entry(entry)
        except Problem as problem:
            raise problem.at(key_step(fqn)) from problem.__cause__
    return out


def _entry(node: object) -> TensorStorageMetadata | BytesStorageMetadata:
    kind = _object(node).get("kind", MISSING)
    if kind == "bytes":
        _object(node, _BYTES_KEYS)
        return BytesStorageMetadata()
    if kind != "tensor":
        raise Problem('kind "tensor" or "bytes"', kind).at(".kind")
    obj = _object(node, _TENSOR_KEYS)
    properties = field(_properties, obj["properties"], ".properties")
    size = field(_dims, obj["size"], ".size")
    if type(obj["chunks"]) is not list:
        raise Problem("a JSON array of chunks", obj["chunks"]).at(".chunks")
    chunks = []
    for i, chunk in enumerate(obj["chunks"]):
        try:
            fields = _object(chunk, _CHUNK_KEYS)
            check_chunk(fields["offsets"], fields["sizes"], list, len(size))
        except Problem as problem:
            raise problem.at(f"[{i}]").at(".chunks") from None
        chunks.append(
            ChunkStorageMetadata(torch.Size(fields["offsets"]), torch.Size(fields["sizes"]))
        )
    return TensorStorageMetadata(properties, size, chunks)


def _dims(node: object) -> torch.Size:
    check_dims(node, list)
    return torch.Size(node)  # type: ignore[arg-type]


def _properties(node: object) -> TensorProperties:
    obj = _object(node, _PROPERTY_KEYS)
    name = string_at(obj["dtype"], ".dtype")
    try:
        dtype = dtypes.by_name(name).torch_dtype
    except UnknownDtypeError as err:
        raise Problem("a dtype name from dcp_impl.dtypes", name).at(".dtype") from err
    layout_name = string_at(obj["layout"], ".layout")
    layout = member(LAYOUTS, layout_name, EXPECTED_LAYOUT, ".layout")
    format_name = string_at(obj["memory_format"], ".memory_format")
    memory_format = member(MEMORY_FORMATS, format_name, EXPECTED_MEMORY_FORMAT, ".memory_format")
    return TensorProperties(
        dtype=dtype,
        layout=layout,
        requires_grad=field(flag, obj["requires_grad"], ".requires_grad"),
        memory_format=memory_format,
        pin_memory=field(flag, obj["pin_memory"], ".pin_memory"),
    )


def _planner_data(node: object) -> dict[str, tuple[str | int, ...]] | None:
    if node is None:
        return None
    out: dict[str, tuple[str | int, ...]] = {}
    for fqn, obj_path in _object(node).items():
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
    obj = _object(node, _ITEM_KEYS)
    step = ".index"
    try:
        index = _object(obj["index"], _INDEX_KEYS)
        step = ".index.fqn"
        fqn = string(index["fqn"])
        step = ".index.offset"
        offset = index["offset"]
        if offset is not None:
            check_dims(offset, list)  # MetadataIndex makes it a torch.Size
        step = ".index.index"
        position = None if index["index"] is None else count(index["index"])
        step = ".location"
        loc = _object(obj["location"], _LOCATION_KEYS)
        location = ItemLocation(loc["path"], loc["offset"], loc["length"], loc["checksum"])
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
    obj = _object(node, _STORAGE_META_KEYS)
    if type(obj["modules"]) is not list:
        raise Problem("a JSON array of strings", obj["modules"]).at(".modules")
    return StorageMeta(
        checkpoint_id=field(opt_string, obj["checkpoint_id"], ".checkpoint_id"),
        save_id=field(opt_string, obj["save_id"], ".save_id"),
        load_id=field(opt_string, obj["load_id"], ".load_id"),
        modules=[field(string, m, f".modules[{i}]") for i, m in enumerate(obj["modules"])],
    )
