"""The safetensors header codec and the HuggingFace folder naming rules.

A safetensors file is ``u64 little-endian N`` + ``N`` bytes of JSON header +
the data section. The header maps each tensor name to ``dtype``, ``shape`` and
``data_offsets`` (relative to the data section), plus an optional
``__metadata__`` object of string values. :func:`encode_header` writes it as
safetensors does (JSON padded with spaces so the data section starts 8-byte
aligned); :func:`parse_header` reads it strictly: a bounded size, no duplicate
keys, known dtypes, non-negative integer shapes and offsets, byte lengths equal
to ``numel * itemsize``, and data ranges that tile the data section exactly.
Every violation is a :class:`~dcp_impl.errors.CorruptCheckpointError` naming
the file.

The folder rules live here too (docs/huggingface.md): file names, reading a
folder into DCP Metadata (:func:`read_folder`: the sidecar when current, else the
index, else every file), and the commit order of a save (:func:`commit`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)

from dcp_impl import _io, dtypes
from dcp_impl.dtypes import DtypeInfo
from dcp_impl.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidMetadataError,
    LayoutMismatchError,
    UnknownDtypeError,
)
from dcp_impl.metadata import ItemLocation, loads

__all__ = [
    "DCP_VERSION_KEY",
    "FORMAT_KEY",
    "INDEX_NAME",
    "MAX_HEADER_BYTES",
    "SAVED_OFFSETS_KEY",
    "SAVE_ID_KEY",
    "SHARDING_INFO_KEY",
    "SIDECAR_NAME",
    "SUFFIX",
    "Header",
    "TensorEntry",
    "encode_header",
    "file_name",
    "parse_header",
    "read_header",
    "saved_offsets",
    "read_folder",
    "current_sidecar",
    "is_folder",
    "BYTES_FILE",
    "commit",
    "index_json",
    "temp_name",
    "unlink",
]

logger = logging.getLogger("dcp_impl.huggingface")

SUFFIX = ".safetensors"
INDEX_NAME = "model.safetensors.index.json"
SIDECAR_NAME = "dcp_metadata.json"
# Keys of ``__metadata__`` shared with torch's HF backend (torch .../checkpoint/_hf_utils.py).
SHARDING_INFO_KEY = "DCP_SHARDING_INFO"
SAVED_OFFSETS_KEY = "saved_offsets"
DCP_VERSION_KEY = "DCP_VERSION"
FORMAT_KEY = "format"
# Ours: every file of one save carries the same id, so files of different saves are told apart.
SAVE_ID_KEY = "DCP_IMPL_SAVE_ID"
# safetensors' own MAX_HEADER_SIZE: checked before the header is allocated.
MAX_HEADER_BYTES = 100_000_000
_LEN_BYTES = 8
_METADATA = "__metadata__"
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})


def file_name(index: int, count: int, shard: int | None = None) -> str:
    """``model-0000i-of-0000N.safetensors``, ``shard-0000s-`` in front if sharded (as torch)."""
    base = f"model-{index:05d}-of-{count:05d}{SUFFIX}"
    return base if shard is None else f"shard-{shard:05d}-{base}"


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor of a safetensors header; ``begin``/``end`` are relative to the data section."""

    name: str
    dtype: DtypeInfo
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header: entries in data order, ``__metadata__``, where the data section starts."""

    path: str
    entries: Mapping[str, TensorEntry]
    metadata: Mapping[str, str]
    data_start: int


def encode_header(
    tensors: Sequence[tuple[str, DtypeInfo, Sequence[int]]], metadata: Mapping[str, str]
) -> tuple[bytes, list[TensorEntry]]:
    """Lay ``(name, dtype, shape)`` tensors out back to back; return header bytes and entries.

    The returned bytes include the 8-byte length prefix; the data section starts right after them.
    """
    doc: dict[str, Any] = {_METADATA: dict(metadata)} if metadata else {}
    entries = []
    offset = 0
    for name, info, shape in tensors:
        length = math.prod(shape) * info.itemsize
        entries.append(TensorEntry(name, info, tuple(shape), offset, offset + length))
        if info.safetensors is None:
            raise UnknownDtypeError(f"tensor {name!r}: dtype {info.name} has no safetensors name")
        doc[name] = {
            "dtype": info.safetensors,
            "shape": list(shape),
            "data_offsets": [offset, offset + length],
        }
        offset += length
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    # Pad so the data section starts 8-byte aligned, as safetensors' own writer does.
    text += b" " * (-(len(text) + _LEN_BYTES) % 8)
    return len(text).to_bytes(_LEN_BYTES, "little") + text, entries


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and strictly parse the header of the safetensors file at ``path``."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(_LEN_BYTES)
            if len(prefix) < _LEN_BYTES:
                raise _corrupt(name, "an 8-byte header length", f"a {size}-byte file")
            length = int.from_bytes(prefix, "little")
            if length > MAX_HEADER_BYTES or _LEN_BYTES + length > size:
                raise _corrupt(
                    name,
                    f"a header of at most {min(MAX_HEADER_BYTES, size - _LEN_BYTES)} bytes",
                    f"a declared header length of {length}",
                )
            blob = f.read(length)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise CorruptCheckpointError(f"{name}: cannot read the safetensors header: {err}") from err
    return parse_header(blob, size, name)


def parse_header(blob: bytes, file_size: int, path: str) -> Header:
    """Strictly parse header JSON ``blob`` of a ``file_size``-byte file (see module docstring)."""
    data_start = _LEN_BYTES + len(blob)
    try:
        doc = json.loads(blob.decode(), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise _corrupt(path, "a UTF-8 JSON header", f"unparseable bytes ({err})") from err
    if not isinstance(doc, dict):
        raise _corrupt(path, "a JSON object header", type(doc).__name__)
    metadata = _parse_metadata(doc.pop(_METADATA, {}), path)
    entries = sorted(
        (_parse_entry(name, value, path) for name, value in doc.items()),
        key=lambda e: (e.begin, e.end),
    )
    position = 0
    for entry in entries:
        if entry.begin != position:
            raise _corrupt(
                path,
                f"tensor {entry.name!r} data to start at byte {position} of the data section",
                f"data_offsets [{entry.begin}, {entry.end}]",
            )
        position = entry.end
    if data_start + position != file_size:
        raise _corrupt(
            path,
            f"a data section of {position} bytes (file size {data_start + position})",
            f"a file of {file_size} bytes",
        )
    return Header(path, {e.name: e for e in entries}, metadata, data_start)


def saved_offsets(header: Header) -> dict[str, tuple[int, ...]] | None:
    """Each tensor's ``saved_offsets`` from ``DCP_SHARDING_INFO``; None when the file has none."""
    raw = header.metadata.get(SHARDING_INFO_KEY)
    if raw is None:
        return None
    try:
        info = json.loads(raw, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise _corrupt(header.path, f"JSON in {SHARDING_INFO_KEY}", f"{err}") from err
    if not isinstance(info, dict):
        raise _corrupt(header.path, f"an object in {SHARDING_INFO_KEY}", type(info).__name__)
    found: dict[str, tuple[int, ...]] = {}
    for name, entry in header.entries.items():
        record = info.get(name)
        offsets = record.get(SAVED_OFFSETS_KEY) if isinstance(record, dict) else None
        if not _is_int_list(offsets) or len(offsets) != len(entry.shape):
            raise _corrupt(
                header.path,
                f"{SHARDING_INFO_KEY}[{name!r}].{SAVED_OFFSETS_KEY}: {len(entry.shape)} offsets",
                repr(record),
            )
        found[name] = tuple(offsets)
    return found


def _parse_metadata(value: object, path: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _corrupt(path, f"{_METADATA} as an object of strings", repr(value)[:200])
    return value


def _parse_entry(name: str, value: object, path: str) -> TensorEntry:
    if not isinstance(value, dict) or set(value) != _ENTRY_KEYS:
        raise _corrupt(path, f"tensor {name!r} with keys {sorted(_ENTRY_KEYS)}", repr(value)[:200])
    shape, offsets = value["shape"], value["data_offsets"]
    if not _is_int_list(shape):
        raise _corrupt(path, f"tensor {name!r} shape as non-negative integers", repr(shape))
    if not _is_int_list(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
        raise _corrupt(path, f"tensor {name!r} data_offsets [begin, end]", repr(offsets))
    try:
        info = dtypes.by_safetensors(value["dtype"])
    except UnknownDtypeError as err:
        raise _corrupt(path, f"tensor {name!r} of a known dtype", repr(value["dtype"])) from err
    begin, end = offsets
    # Python ints do not overflow; the file-size check in parse_header bounds them.
    if end - begin != math.prod(shape) * info.itemsize:
        raise _corrupt(
            path,
            f"tensor {name!r} of {info.safetensors}{shape} to span "
            f"{math.prod(shape) * info.itemsize} bytes",
            f"{end - begin} bytes",
        )
    return TensorEntry(name, info, tuple(shape), begin, end)


def _is_int_list(value: object) -> TypeGuard[list[int]]:
    # bool is an int subclass; a shape of [true] is not a shape.
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {dup!r}")
    return result


def _no_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def _corrupt(path: str, expected: str, found: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"{path}: invalid safetensors header: expected {expected}, found {found}"
    )


# --------------------------------------------------------------------------- folders


def read_folder(root: str | os.PathLike[str]) -> Metadata:
    """The checkpoint Metadata of a HuggingFace folder, with ItemLocation storage_data.

    The sidecar when it is current (see :func:`current_sidecar`); otherwise the files the
    index's ``weight_map`` names (only the tensors it assigns to each), otherwise every
    ``*.safetensors`` file, with chunk offsets from ``DCP_SHARDING_INFO`` where present.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise CheckpointNotFoundError(f"{folder}: expected a checkpoint folder, found none")
    metadata = current_sidecar(folder)
    if metadata is not None:
        return metadata
    files = _listed_files(folder)
    if not files:
        raise CheckpointNotFoundError(
            f"{folder}: expected {SIDECAR_NAME}, {INDEX_NAME} or *{SUFFIX} files, found none"
        )
    return _metadata_from_headers(folder, files)


def is_folder(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` looks like a HuggingFace folder: sidecar, index or safetensors files."""
    folder = Path(root)
    if not folder.is_dir():
        return False
    names = (SIDECAR_NAME, INDEX_NAME)
    return any((folder / n).is_file() for n in names) or any(folder.glob(f"*{SUFFIX}"))


def current_sidecar(folder: Path) -> Metadata | None:
    """The sidecar's Metadata, or None when there is none or other writers replaced its files.

    Current means: every safetensors file it names exists, all carry one ``DCP_IMPL_SAVE_ID``,
    each header places each of the file's items where the sidecar says, and the index (if
    any) names only files the sidecar names. A sidecar that is not valid JSON metadata is an
    error, never skipped.
    """
    path = folder / SIDECAR_NAME
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    metadata = loads(text)
    storage = metadata.storage_data
    if not isinstance(storage, dict):
        raise InvalidMetadataError(f"{path}: expected storage_data, found none")
    by_file: dict[str, list[tuple[MetadataIndex, ItemLocation]]] = {}
    for key, location in storage.items():
        if location.path.endswith(SUFFIX):
            by_file.setdefault(location.path, []).append((key, location))
    save_ids = set()
    for name, items in by_file.items():
        try:
            header = read_header(folder / name)
        except FileNotFoundError:
            return _stale(path, f"{name} is missing")
        save_ids.add(header.metadata.get(SAVE_ID_KEY))
        for key, location in items:
            entry = header.entries.get(key.fqn)
            if entry is None or (header.data_start + entry.begin, entry.length) != (
                location.offset,
                location.length,
            ):
                return _stale(path, f"{name} does not hold {key.fqn!r} where the sidecar says")
    if len(save_ids) > 1 or None in save_ids:
        return _stale(path, "its files come from different saves")
    weight_map = _weight_map(folder)
    if weight_map is not None and not set(weight_map.values()) <= set(by_file):
        return _stale(path, f"{INDEX_NAME} names files the sidecar does not")
    return metadata


def _stale(path: Path, why: str) -> Metadata | None:
    logger.warning("ignoring %s written by an earlier save: %s", path, why)
    return None


def _weight_map(folder: Path) -> dict[str, str] | None:
    path = folder / INDEX_NAME
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CorruptCheckpointError(
            f"{path}: expected JSON, found unparseable bytes ({err})"
        ) from err
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    # Plain file names only: an index must not make us open files outside the folder.
    if not isinstance(weight_map, dict) or not all(
        isinstance(v, str) and v.endswith(SUFFIX) and Path(v).name == v and "\\" not in v
        for v in weight_map.values()
    ):
        raise CorruptCheckpointError(
            f"{path}: expected a weight_map of tensor name -> *{SUFFIX} file, "
            f"found {weight_map!r:.200}"
        )
    return weight_map


def _listed_files(folder: Path) -> dict[str, set[str] | None]:
    """File name -> the tensors to take from it (None: all of them)."""
    weight_map = _weight_map(folder)
    if weight_map is not None:
        files: dict[str, set[str] | None] = {}
        for fqn, name in weight_map.items():
            wanted = files.setdefault(name, set())
            assert wanted is not None
            wanted.add(fqn)
        return files
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(SUFFIX) and p.is_file())
    return dict.fromkeys(names)


def _metadata_from_headers(folder: Path, files: Mapping[str, set[str] | None]) -> Metadata:
    tensors: dict[str, TensorStorageMetadata] = {}
    storage: dict[MetadataIndex, ItemLocation] = {}
    save_ids: dict[str, str] = {}
    for name, wanted in files.items():
        try:
            header = read_header(folder / name)
        except FileNotFoundError as err:
            raise CorruptCheckpointError(
                f"{folder / name}: listed in {INDEX_NAME}, missing"
            ) from err
        if SAVE_ID_KEY in header.metadata:
            save_ids.setdefault(header.metadata[SAVE_ID_KEY], name)
        offsets = saved_offsets(header)
        for entry in header.entries.values():
            if wanted is not None and entry.name not in wanted:
                continue
            at = offsets[entry.name] if offsets is not None else (0,) * len(entry.shape)
            _add_chunk(tensors, entry, at, name)
            key = MetadataIndex(entry.name, at)
            if key in storage:
                raise LayoutMismatchError(
                    f"{folder}: tensor {entry.name!r} chunk at offsets {at}: expected it in one "
                    f"file, found it in {storage[key].path} and {name}"
                )
            storage[key] = ItemLocation(name, header.data_start + entry.begin, entry.length)
        if wanted is not None and not wanted <= header.entries.keys():
            missing = sorted(wanted - header.entries.keys())[:5]
            raise CorruptCheckpointError(
                f"{folder / name}: {INDEX_NAME} places {missing} here, absent"
            )
    if len(save_ids) > 1:
        first, second = list(save_ids.values())[:2]
        raise CorruptCheckpointError(
            f"{folder}: expected the files of one save, found {first} and {second} from different "
            "saves and no current sidecar (an interrupted save?)"
        )
    return Metadata(state_dict_metadata=dict(tensors), storage_data=storage)


def _add_chunk(
    tensors: dict[str, TensorStorageMetadata], entry: TensorEntry, at: tuple[int, ...], name: str
) -> None:
    chunk = ChunkStorageMetadata(torch.Size(at), torch.Size(entry.shape))
    ends = [o + s for o, s in zip(at, entry.shape, strict=True)]
    known = tensors.get(entry.name)
    if known is None:
        properties = TensorProperties(dtype=entry.dtype.torch_dtype)
        tensors[entry.name] = TensorStorageMetadata(properties, torch.Size(ends), [chunk])
        return
    if known.properties.dtype != entry.dtype.torch_dtype or len(known.size) != len(ends):
        raise LayoutMismatchError(
            f"{name}: tensor {entry.name!r}: expected chunks of {known.properties.dtype} with "
            f"{len(known.size)} dims, found {entry.dtype.torch_dtype} with {len(ends)}"
        )
    known.chunks.append(chunk)
    # Without a sidecar, the extent of the chunks is all that is known of the size.
    known.size = torch.Size(max(a, b) for a, b in zip(known.size, ends, strict=True))


# --------------------------------------------------------------------------- committing

BYTES_FILE = "dcp-bytes-{:05d}.bin"
# Files this backend may remove once a newer save has committed: only its own names.
_OURS = re.compile(r"(shard-\d{5}-)?model-\d{5}-of-\d{5}\.safetensors|dcp-bytes-\d{5}\.bin")
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<save>[0-9a-f]{32})\.tmp")


def index_json(metadata: Metadata) -> str:
    """``model.safetensors.index.json`` as HF transformers reads it."""
    assert isinstance(metadata.storage_data, dict)
    weight_map = {}
    total = 0
    for key, loc in metadata.storage_data.items():
        if isinstance(metadata.state_dict_metadata[key.fqn], TensorStorageMetadata):
            weight_map[key.fqn] = loc.path
            total += loc.length
    doc = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    return json.dumps(doc, indent=2, ensure_ascii=False)


def commit(directory: Path, save_id: str, sidecar: str, index: str | None, *, sync: bool) -> None:
    """Rename this save's files into place, then write the index and, last, the sidecar."""
    # Without the old sidecar and index, a crash below leaves no loadable claim, never a mix.
    unlink(directory / SIDECAR_NAME)
    unlink(directory / INDEX_NAME)
    kept = set()
    for entry in os.scandir(directory):
        match = _TEMP.fullmatch(entry.name)
        if match and match["save"] == save_id:
            os.replace(entry.path, directory / match["name"])
            kept.add(match["name"])
    if sync:
        _io.fsync_dir(directory)
    if index is not None:
        _io.atomic_write(directory / INDEX_NAME, index.encode(), sync=sync)
    _io.atomic_write(directory / SIDECAR_NAME, sidecar.encode(), sync=sync)
    _remove_stale(directory, kept)


def _remove_stale(directory: Path, kept: set[str]) -> None:
    """Remove files of earlier saves: only names this backend writes, never other files."""
    for entry in os.scandir(directory):
        match = _TEMP.fullmatch(entry.name)
        name = match["name"] if match else entry.name
        if entry.name not in kept and _OURS.fullmatch(name):
            unlink(Path(entry.path))


def unlink(path: Path) -> None:
    """Remove ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def temp_name(name: str, save_id: str) -> str:
    """Where a save writes ``name`` before :func:`commit` renames it into place."""
    return f".{name}.{save_id}.tmp"
