"""The safetensors header codec.

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

The HuggingFace folder rules built on it (file names, reading a folder, committing a
save) live in :mod:`dcp_impl.huggingface._folder`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from dcp_impl import dtypes
from dcp_impl._collector import collector_paused
from dcp_impl.dtypes import DtypeInfo
from dcp_impl.errors import CheckpointError, CorruptCheckpointError, UnknownDtypeError

__all__ = [
    "DCP_VERSION_KEY",
    "FORMAT_KEY",
    "MAX_HEADER_BYTES",
    "SAVED_OFFSETS_KEY",
    "SAVE_ID_KEY",
    "SHARDING_INFO_KEY",
    "Header",
    "TensorEntry",
    "encode_header",
    "parse_header",
    "read_header",
    "saved_offsets",
    "strict_json",
]

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


def read_header(
    path: str, size: Callable[[], int], read_range: Callable[[int, int], bytes]
) -> Header:
    """Read and strictly parse the header of the safetensors file ``path``, wherever it is
    stored: ``size()`` gives its length, ``read_range(offset, length)`` its bytes (two
    bounded reads: the length, then the header). ``FileNotFoundError`` when it is missing;
    any other ``OSError`` becomes :class:`CorruptCheckpointError`."""
    try:
        file_size = size()
        prefix = read_range(0, _LEN_BYTES)
        if len(prefix) < _LEN_BYTES:
            raise _corrupt(path, "an 8-byte header length", f"a {file_size}-byte file")
        length = int.from_bytes(prefix, "little")
        if length > MAX_HEADER_BYTES or _LEN_BYTES + length > file_size:
            raise _corrupt(
                path,
                f"a header of at most {min(MAX_HEADER_BYTES, file_size - _LEN_BYTES)} bytes",
                f"a declared header length of {length}",
            )
        blob = read_range(_LEN_BYTES, length)
    except (FileNotFoundError, CheckpointError):  # refusals already say what and why
        raise
    except OSError as err:
        raise CorruptCheckpointError(f"{path}: cannot read the safetensors header: {err}") from err
    if len(blob) < length:  # replaced while we read it
        raise _corrupt(path, f"a header of {length} bytes", f"{len(blob)} bytes")
    return parse_header(blob, file_size, path)


def parse_header(blob: bytes, file_size: int, path: str) -> Header:
    """Strictly parse header JSON ``blob`` of a ``file_size``-byte file (see module docstring)."""
    with collector_paused():  # an object per entry field, no cycles: as the metadata codec
        return _parse_header(blob, file_size, path)


def _parse_header(blob: bytes, file_size: int, path: str) -> Header:
    data_start = _LEN_BYTES + len(blob)
    try:
        doc = strict_json(blob.decode())
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
        info = strict_json(raw)
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


def strict_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses repeated keys and NaN/Infinity (as ``ValueError``)."""
    return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)


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
