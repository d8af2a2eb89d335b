"""Checkpoint ``Metadata`` <-> a safe, versioned JSON document, and its validation.

The format is specified in ``docs/format.md``; each MUST rule there names the
error raised here. Parsing is strict and bounded: JSON only (never pickle),
the input size is checked before parsing, and every value is type- and
range-checked. Any malformed input raises :class:`InvalidMetadataError` whose
message starts with the JSON path of the offending value.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, cast

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

from dcp_impl import dtypes, layout
from dcp_impl.errors import InvalidMetadataError, UnknownDtypeError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_METADATA_BYTES",
    "MAX_NDIM",
    "ItemLocation",
    "dumps",
    "loads",
    "validate",
]

FORMAT_NAME = "dcp_impl.metadata"
FORMAT_VERSION = 1
MAX_METADATA_BYTES = 512 * 1024 * 1024
"""Largest accepted document, in UTF-8 bytes; checked before parsing."""
MAX_NDIM = 64
"""Most dimensions a tensor or chunk may have (torch itself allows 64)."""
_MAX_INT = 2**63 - 1  # every size, offset and index must fit an int64

# torch's layout and memory-format objects, by the attribute name we store.
_LAYOUTS = {
    name: getattr(torch, name)
    for name in (
        *("strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc"),
        *("_mkldnn", "jagged"),
    )
}
_MEMORY_FORMATS = {
    name: getattr(torch, name)
    for name in ("contiguous_format", "channels_last", "channels_last_3d", "preserve_format")
}
_LAYOUT_NAMES = {v: k for k, v in _LAYOUTS.items()}
_MEMORY_FORMAT_NAMES = {v: k for k, v in _MEMORY_FORMATS.items()}

_CHECKSUM = re.compile(r"[a-z][a-z0-9_]{0,31}:[0-9a-f]{1,128}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DRIVE = re.compile(r"[A-Za-z]:")
_BAD_PARTS = frozenset({"", ".", ".."})
_REPR = reprlib.Repr()  # bounded: a hostile value may be huge
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxdict = 4
_MISSING = object()  # what a lookup of an absent key gives


@dataclass(frozen=True, slots=True)
class ItemLocation:
    """Where one stored item's bytes live: the storage_data value of dcp_impl's backends."""

    path: str
    """File name relative to the checkpoint root, '/'-separated, never absolute or '..'."""
    offset: int
    """Byte offset of the item in that file."""
    length: int
    """Byte length of the item."""
    checksum: str | None = None
    """``"<algorithm>:<lowercase hex digest>"``, e.g. ``"xxh3_64:0123456789abcdef"``, or None."""

    def __post_init__(self) -> None:
        try:
            _check_location(self.path, self.offset, self.length, self.checksum)
        except _Problem as problem:
            raise InvalidMetadataError(f"ItemLocation{problem.describe()}") from problem


def dumps(metadata: Metadata) -> str:
    """Encode ``metadata`` as a compact, deterministic JSON document.

    Dict order is kept, so the same Metadata always gives the same text and
    ``dumps(loads(text)) == text`` for any text dumps produced. Raises
    :class:`InvalidMetadataError` naming the first value the format cannot
    hold (e.g. a custom planner_data object, a non-ItemLocation storage value).
    """
    try:
        document = _encode(metadata)
    except _Problem as problem:
        raise InvalidMetadataError(f"cannot encode Metadata: {problem.describe('$')}") from (
            problem.__cause__
        )
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def loads(text: str | bytes | bytearray) -> Metadata:
    """Decode a document written by :func:`dumps`; reject anything else.

    Checks structure, types and ranges (see docs/format.md), not geometry:
    call :func:`validate` for chunk bounds, overlaps and coverage.
    """
    document = _parse(text)
    try:
        return _decode(document)
    except _Problem as problem:
        raise InvalidMetadataError(problem.describe("$")) from problem.__cause__


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
    if isinstance(metadata.storage_data, dict):
        _validate_storage_keys(metadata.state_dict_metadata, metadata.storage_data)


# --- problems and their JSON paths ------------------------------------------------------------


class _Problem(Exception):
    """Internal: a bad value somewhere below; each level on the way up adds its path step."""

    def __init__(self, expected: str, found: object, *, raw: bool = False) -> None:
        super().__init__(expected)
        self.message = expected if raw else f"expected {expected}, found {_show(found)}"
        self.steps: list[str] = []

    def at(self, step: str) -> _Problem:
        self.steps.append(step)
        return self

    def describe(self, root: str = "") -> str:
        return f"{root}{''.join(reversed(self.steps))}: {self.message}"


def _show(value: object) -> str:
    """A short description of a found value: its JSON (or Python) type and a bounded repr."""
    if value is _MISSING:
        return "no such key"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    kinds = {list: "array", str: "string", int: "integer", float: "number"}
    kind = "object" if isinstance(value, dict) else kinds.get(type(value), type(value).__name__)
    try:
        shown = _REPR.repr(value)
    except ValueError:  # an int too long to print
        shown = f"<{value.bit_length() if isinstance(value, int) else '?'} bits>"
    return f"{kind} {shown}"


def _key(key: str) -> str:
    """A path step for a key: ``["w.0"]`` (escaped when the name is not valid UTF-8)."""
    return f"[{json.dumps(key, ensure_ascii=not _is_utf8(key))}]"


def _is_utf8(text: str) -> bool:
    return text.isascii() or _SURROGATE.search(text) is None


# --- scalar checks shared by both directions --------------------------------------------------


def _string(value: object) -> str:
    if type(value) is str and (value.isascii() or _SURROGATE.search(value) is None):
        return value
    if type(value) is not str:
        raise _Problem("a string", value)
    raise _Problem("a string of Unicode scalar values (no lone surrogates)", value)


def _opt_string(value: object) -> str | None:
    return None if value is None else _string(value)


def _flag(value: object) -> bool:
    if type(value) is not bool:
        raise _Problem("true or false", value)
    return value


def _count(value: object) -> int:
    """A non-negative int64; bool is rejected although it subclasses int."""
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        raise _Problem("an integer in [0, 2**63-1]", value)
    return value


def _check_dims(value: object, container: type, *, ndim: int | None = None) -> None:
    """Sizes or offsets: a ``container`` (tuple when encoding, list when decoding) of counts."""
    if not isinstance(value, container):
        raise _Problem(f"a {'tuple' if container is tuple else 'JSON array'} of integers", value)
    dims = cast("Sequence[object]", value)
    if ndim is None and len(dims) > MAX_NDIM:
        raise _Problem(f"at most {MAX_NDIM} dimensions, found {len(dims)}", None, raw=True)
    if ndim is not None and len(dims) != ndim:
        raise _Problem(f"{ndim} dimensions (the tensor's), found {len(dims)}", None, raw=True)
    for i, v in enumerate(dims):  # a plain loop: the hot path of a 100k-chunk document
        if type(v) is not int or v < 0 or v > _MAX_INT:
            raise _Problem("an integer in [0, 2**63-1]", v).at(f"[{i}]")


def _check_location(path: object, offset: object, length: object, checksum: object) -> None:
    step = ".path"
    try:
        name = _string(path)
        if not name or name[0] == "/" or "\\" in name or "\0" in name or _DRIVE.match(name):
            raise _Problem("a relative '/'-separated file path", name)
        if not _BAD_PARTS.isdisjoint(name.split("/")):
            raise _Problem("a path without empty, '.' or '..' parts", name)
        step = ".offset"
        _count(offset)
        step = ".length"
        _count(length)
        step = ".checksum"
        if checksum is not None and not _CHECKSUM.fullmatch(_string(checksum)):
            raise _Problem('null or "<algorithm>:<lowercase hex>"', checksum)
    except _Problem as problem:
        raise problem.at(step) from None


def _string_at(value: object, step: str) -> str:
    return _field(_string, value, step)


def _field(convert: Callable[[Any], Any], value: object, step: str) -> Any:
    """``convert(value)``, adding ``step`` to the path of any problem."""
    try:
        return convert(value)
    except _Problem as problem:
        raise problem.at(step) from problem.__cause__


# --- encoding ---------------------------------------------------------------------------------


def _encode(md: Metadata) -> dict[str, Any]:
    if not isinstance(md, Metadata):
        raise _Problem("a torch.distributed.checkpoint.metadata.Metadata", md)
    if not isinstance(md.state_dict_metadata, dict):
        raise _Problem("a dict", md.state_dict_metadata).at(".state_dict_metadata")
    entries: dict[str, Any] = {}
    for fqn, entry in md.state_dict_metadata.items():
        try:
            entries[_string(fqn)] = _encode_entry(entry)
        except _Problem as problem:
            raise problem.at(_any_key(fqn)).at(".state_dict_metadata") from problem.__cause__
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "version": _field(_opt_string, md.version, ".version"),
        "state_dict_metadata": entries,
        "planner_data": _field(_encode_planner_data, md.planner_data, ".planner_data"),
        "storage_data": _field(_encode_storage_data, md.storage_data, ".storage_data"),
        "storage_meta": _field(_encode_storage_meta, md.storage_meta, ".storage_meta"),
    }


def _any_key(key: object) -> str:
    return _key(key) if type(key) is str else f"[{_show(key)}]"


def _encode_entry(entry: object) -> dict[str, Any]:
    if isinstance(entry, BytesStorageMetadata):
        return {"kind": "bytes"}
    if not isinstance(entry, TensorStorageMetadata):
        raise _Problem("TensorStorageMetadata or BytesStorageMetadata", entry)
    props = _field(_encode_properties, entry.properties, ".properties")
    _field(_encode_dims, entry.size, ".size")
    if not isinstance(entry.chunks, list):
        raise _Problem("a list of ChunkStorageMetadata", entry.chunks).at(".chunks")
    ndim = len(entry.size)
    chunks = []
    for i, chunk in enumerate(entry.chunks):
        step = ""
        try:
            if not isinstance(chunk, ChunkStorageMetadata):
                raise _Problem("a ChunkStorageMetadata", chunk)
            step = ".offsets"
            _check_dims(chunk.offsets, tuple, ndim=ndim)
            step = ".sizes"
            _check_dims(chunk.sizes, tuple, ndim=ndim)
        except _Problem as problem:
            raise problem.at(step).at(f"[{i}]").at(".chunks") from None
        chunks.append({"offsets": list(chunk.offsets), "sizes": list(chunk.sizes)})
    return {"kind": "tensor", "properties": props, "size": list(entry.size), "chunks": chunks}


def _encode_dims(value: object) -> None:
    _check_dims(value, tuple)


def _encode_properties(props: object) -> dict[str, Any]:
    if not isinstance(props, TensorProperties):
        raise _Problem("a TensorProperties", props)
    try:
        dtype = dtypes.by_torch(props.dtype).name
    except UnknownDtypeError as err:
        raise _Problem("a dtype from dcp_impl.dtypes", props.dtype).at(".dtype") from err
    if props.layout not in _LAYOUT_NAMES:
        raise _Problem(f"a layout in {sorted(_LAYOUTS)}", props.layout).at(".layout")
    if props.memory_format not in _MEMORY_FORMAT_NAMES:
        expected = f"a memory format in {sorted(_MEMORY_FORMATS)}"
        raise _Problem(expected, props.memory_format).at(".memory_format")
    return {
        "dtype": dtype,
        "layout": _LAYOUT_NAMES[props.layout],
        "requires_grad": _field(_flag, props.requires_grad, ".requires_grad"),
        "memory_format": _MEMORY_FORMAT_NAMES[props.memory_format],
        "pin_memory": _field(_flag, props.pin_memory, ".pin_memory"),
    }


def _encode_planner_data(data: object) -> dict[str, list[str | int]] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _Problem("None or a flatten mapping dict[str, tuple[str | int, ...]]", data)
    out: dict[str, list[str | int]] = {}
    for fqn, obj_path in data.items():
        try:
            if not isinstance(obj_path, tuple):
                raise _Problem("a tuple of str | int", obj_path)
            out[_string(fqn)] = [_path_item(item, i) for i, item in enumerate(obj_path)]
        except _Problem as problem:
            raise problem.at(_any_key(fqn)) from None
    return out


def _path_item(item: object, i: int) -> str | int:
    """One step of a flatten-mapping object path: a dict key (str) or a list index (int)."""
    return _field(_count if type(item) is int else _string, item, f"[{i}]")


def _encode_storage_data(data: object) -> list[dict[str, Any]] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _Problem("None or a dict[MetadataIndex, ItemLocation]", data)
    out = []
    for i, (index, loc) in enumerate(data.items()):
        try:
            if not isinstance(index, MetadataIndex):
                raise _Problem("a MetadataIndex key", index).at(".index")
            if not isinstance(loc, ItemLocation):
                raise _Problem("an ItemLocation value", loc).at(".location")
            fqn = _string_at(index.fqn, ".index.fqn")
            if index.offset is not None:
                _field(_encode_dims, index.offset, ".index.offset")
            if index.index is not None:
                _field(_count, index.index, ".index.index")
        except _Problem as problem:
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


def _encode_storage_meta(meta: object) -> dict[str, Any] | None:
    if meta is None:
        return None
    if not isinstance(meta, StorageMeta):
        raise _Problem("None or a StorageMeta", meta)
    checkpoint_id = meta.checkpoint_id
    if isinstance(checkpoint_id, os.PathLike):
        checkpoint_id = os.fspath(checkpoint_id)  # documented: a PathLike is stored as its str
    if not isinstance(meta.modules, list):
        raise _Problem("a list of str", meta.modules).at(".modules")
    return {
        "checkpoint_id": _field(_opt_string, checkpoint_id, ".checkpoint_id"),
        "save_id": _field(_opt_string, meta.save_id, ".save_id"),
        "load_id": _field(_opt_string, meta.load_id, ".load_id"),
        "modules": [_field(_string, m, f".modules[{i}]") for i, m in enumerate(meta.modules)],
    }


# --- parsing and decoding ---------------------------------------------------------------------


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


def _parse(text: str | bytes | bytearray) -> object:
    if isinstance(text, bytes | bytearray):
        size = len(text)
    elif isinstance(text, str):
        size = len(text)
        if size <= MAX_METADATA_BYTES and not text.isascii():
            size = len(text.encode("utf-8", "surrogatepass"))
    else:
        raise InvalidMetadataError(f"metadata: expected str or bytes, found {type(text).__name__}")
    if size > MAX_METADATA_BYTES:
        raise InvalidMetadataError(
            f"metadata: expected at most MAX_METADATA_BYTES={MAX_METADATA_BYTES} bytes, "
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


def _object(node: object, keys: frozenset[str] | None = None) -> dict[str, Any]:
    """``node`` as a JSON object with no repeated key and, if given, exactly ``keys``."""
    if type(node) is _DuplicateKeys:
        dup = json.dumps(node.duplicate)
        raise _Problem(f"an object with unique keys, found {dup} twice", None, raw=True)
    if type(node) is not dict:
        raise _Problem("a JSON object", node)
    if keys is not None and node.keys() != keys:
        unknown = sorted(node.keys() - keys)
        if unknown:
            raise _Problem(
                f"only the keys {sorted(keys)}, found unknown key {json.dumps(unknown[0])}",
                None,
                raw=True,
            )
        missing = sorted(keys - node.keys())
        raise _Problem(f"the key {json.dumps(missing[0])}, found it missing", None, raw=True)
    return node


def _decode(doc: object) -> Metadata:
    top = _object(doc)
    fmt = top.get("format", _MISSING)
    if fmt != FORMAT_NAME:
        raise _Problem(json.dumps(FORMAT_NAME), fmt).at(".format")
    version = top.get("format_version", _MISSING)
    if type(version) is not int:
        raise _Problem("an integer format version", version).at(".format_version")
    if version != FORMAT_VERSION:
        why = (
            "written by a newer dcp_impl; upgrade dcp_impl to read it"
            if version > FORMAT_VERSION
            else "no dcp_impl writes that version"
        )
        expected = f"expected {FORMAT_VERSION} (the version this reader supports)"
        raise _Problem(f"{expected}, found {version}: {why}", None, raw=True).at(".format_version")
    _object(top, _TOP_KEYS)
    return Metadata(
        state_dict_metadata=_field(
            _decode_entries, top["state_dict_metadata"], ".state_dict_metadata"
        ),
        planner_data=_field(_decode_planner_data, top["planner_data"], ".planner_data"),
        storage_data=_field(_decode_storage_data, top["storage_data"], ".storage_data"),
        storage_meta=_field(_decode_storage_meta, top["storage_meta"], ".storage_meta"),
        version=_field(_opt_string, top["version"], ".version"),
    )


def _decode_entries(node: object) -> dict[str, TensorStorageMetadata | BytesStorageMetadata]:
    out: dict[str, TensorStorageMetadata | BytesStorageMetadata] = {}
    for fqn, entry in _object(node).items():
        try:
            out[_string(fqn)] = _decode_entry(entry)
        except _Problem as problem:
            raise problem.at(_key(fqn)) from problem.__cause__
    return out


def _decode_entry(node: object) -> TensorStorageMetadata | BytesStorageMetadata:
    kind = _object(node).get("kind", _MISSING)
    if kind == "bytes":
        _object(node, _BYTES_KEYS)
        return BytesStorageMetadata()
    if kind != "tensor":
        raise _Problem('kind "tensor" or "bytes"', kind).at(".kind")
    obj = _object(node, _TENSOR_KEYS)
    properties = _field(_decode_properties, obj["properties"], ".properties")
    size = _field(_decode_dims, obj["size"], ".size")
    if type(obj["chunks"]) is not list:
        raise _Problem("a JSON array of chunks", obj["chunks"]).at(".chunks")
    chunks = []
    for i, chunk in enumerate(obj["chunks"]):
        step = ""
        try:
            fields = _object(chunk, _CHUNK_KEYS)
            step = ".offsets"
            _check_dims(fields["offsets"], list, ndim=len(size))
            step = ".sizes"
            _check_dims(fields["sizes"], list, ndim=len(size))
        except _Problem as problem:
            raise problem.at(step).at(f"[{i}]").at(".chunks") from None
        chunks.append(
            ChunkStorageMetadata(torch.Size(fields["offsets"]), torch.Size(fields["sizes"]))
        )
    return TensorStorageMetadata(properties, size, chunks)


def _decode_dims(node: object) -> torch.Size:
    _check_dims(node, list)
    return torch.Size(node)  # type: ignore[arg-type]


def _decode_properties(node: object) -> TensorProperties:
    obj = _object(node, _PROPERTY_KEYS)
    name = _string_at(obj["dtype"], ".dtype")
    try:
        dtype = dtypes.by_name(name).torch_dtype
    except UnknownDtypeError as err:
        raise _Problem("a dtype name from dcp_impl.dtypes", name).at(".dtype") from err
    layout_name = _string_at(obj["layout"], ".layout")
    if layout_name not in _LAYOUTS:
        raise _Problem(f"a layout in {sorted(_LAYOUTS)}", layout_name).at(".layout")
    format_name = _string_at(obj["memory_format"], ".memory_format")
    if format_name not in _MEMORY_FORMATS:
        expected = f"a memory format in {sorted(_MEMORY_FORMATS)}"
        raise _Problem(expected, format_name).at(".memory_format")
    return TensorProperties(
        dtype=dtype,
        layout=_LAYOUTS[layout_name],
        requires_grad=_field(_flag, obj["requires_grad"], ".requires_grad"),
        memory_format=_MEMORY_FORMATS[format_name],
        pin_memory=_field(_flag, obj["pin_memory"], ".pin_memory"),
    )


def _decode_planner_data(node: object) -> dict[str, tuple[str | int, ...]] | None:
    if node is None:
        return None
    out: dict[str, tuple[str | int, ...]] = {}
    for fqn, obj_path in _object(node).items():
        try:
            if type(obj_path) is not list:
                raise _Problem("a JSON array of strings and integers", obj_path)
            out[_string(fqn)] = tuple(_path_item(item, i) for i, item in enumerate(obj_path))
        except _Problem as problem:
            raise problem.at(_key(fqn)) from None
    return out


def _decode_storage_data(node: object) -> dict[MetadataIndex, ItemLocation] | None:
    if node is None:
        return None
    if type(node) is not list:
        raise _Problem("null or a JSON array of storage items", node)
    out: dict[MetadataIndex, ItemLocation] = {}
    for i, item in enumerate(node):
        try:
            index, location = _decode_storage_item(item)
            if index in out:
                first = list(out).index(index)
                raise _Problem(
                    f"a new fqn and offset, found those of item [{first}] again", None, raw=True
                ).at(".index")
        except _Problem as problem:
            raise problem.at(f"[{i}]") from None
        out[index] = location
    return out


def _decode_storage_item(node: object) -> tuple[MetadataIndex, ItemLocation]:
    obj = _object(node, _ITEM_KEYS)
    step = ".index"
    try:
        index = _object(obj["index"], _INDEX_KEYS)
        step = ".index.fqn"
        fqn = _string(index["fqn"])
        step = ".index.offset"
        offset = index["offset"]
        if offset is not None:
            _check_dims(offset, list)  # MetadataIndex makes it a torch.Size
        step = ".index.index"
        position = None if index["index"] is None else _count(index["index"])
        step = ".location"
        loc = _object(obj["location"], _LOCATION_KEYS)
        location = ItemLocation(loc["path"], loc["offset"], loc["length"], loc["checksum"])
    except _Problem as problem:
        raise problem.at(step) from None
    except InvalidMetadataError as err:
        if not isinstance(err.__cause__, _Problem):  # ItemLocation keeps its path-less problem
            raise
        raise err.__cause__.at(step) from None
    return MetadataIndex(fqn, offset, position), location


def _decode_storage_meta(node: object) -> StorageMeta | None:
    if node is None:
        return None
    obj = _object(node, _STORAGE_META_KEYS)
    if type(obj["modules"]) is not list:
        raise _Problem("a JSON array of strings", obj["modules"]).at(".modules")
    return StorageMeta(
        checkpoint_id=_field(_opt_string, obj["checkpoint_id"], ".checkpoint_id"),
        save_id=_field(_opt_string, obj["save_id"], ".save_id"),
        load_id=_field(_opt_string, obj["load_id"], ".load_id"),
        modules=[_field(_string, m, f".modules[{i}]") for i, m in enumerate(obj["modules"])],
    )


# --- validation -------------------------------------------------------------------------------


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
    pair = layout.first_overlap(boxes)
    if pair is not None:
        i, j = pair
        common = layout.intersect(boxes[i], boxes[j])
        assert common is not None  # first_overlap found these two to overlap
        raise InvalidMetadataError(
            f"{name}: expected disjoint chunks, found chunk {i} {_show_box(boxes[i])} and "
            f"chunk {j} {_show_box(boxes[j])} overlapping in {_show_box(common)}"
        )
    if not allow_partial and (missing := layout.holes(shape, boxes)):
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
                    f"storage_data: expected MetadataIndex keys, found {_show(key)}"
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
