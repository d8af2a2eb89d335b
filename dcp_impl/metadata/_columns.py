"""Version 2's compact sections: a tensor's chunk table and the storage columns.

A document of millions of chunks is mostly these two sections, so both are flat JSON arrays
(one per field, see docs/format.md §1.2) checked in bulk: a column whose values are all
fine costs a few C-level passes (types, minimum, maximum); only a column that fails is
walked value by value, to name the first bad one at its JSON path. The objects are then
built from checked values without re-checking each one: repeated chunk sizes are one
shared ``torch.Size``, a storage key's offset is its chunk's ``offsets`` object and a file
path one shared string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    MetadataIndex,
    TensorStorageMetadata,
)

from dcp_impl.metadata._parse import json_object
from dcp_impl.metadata._values import (
    CHECKSUM,
    MAX_INT,
    ItemLocation,
    Problem,
    check_dims,
    checked_locations,
    checksum,
    file_path,
    whole_checksum,
)

__all__ = ["CHUNK_TABLE_KEYS", "STORAGE_KEYS", "decode_chunks", "decode_storage", "counts_ok"]

CHUNK_TABLE_KEYS = frozenset({"offsets", "sizes", "size_table"})
STORAGE_KEYS = frozenset({"files", "entry", "chunk", "index", "file", "offset", "length"}) | {
    "checksum"
}
_COLUMNS = ("entry", "chunk", "index", "file", "offset", "length", "checksum")
_INT_ONLY = frozenset({int})
_STR_ONLY = frozenset({str})
_COUNT = "an integer in [0, 2**63-1]"
_new = object.__new__
_set = object.__setattr__


def counts_ok(values: Sequence[object], below: int = MAX_INT + 1) -> bool:
    """Whether every value is an int (not a bool) in ``[0, below)``: C-level passes only."""
    if not values:
        return True
    if not set(map(type, values)) <= _INT_ONLY:
        return False
    return min(values) >= 0 and max(values) < below  # type: ignore[type-var, operator]


def _counts(
    values: object, step: str, *, below: int = MAX_INT + 1, what: str = _COUNT, nulls: bool = False
) -> list[Any]:
    """``values`` as a JSON array of counts in ``[0, below)`` (or nulls); else a Problem."""
    if type(values) is not list:
        raise Problem("a JSON array of integers", values).at(step)
    present = [v for v in values if v is not None] if nulls else values
    if counts_ok(present, below):
        return values
    for i, value in enumerate(values):
        if not (nulls and value is None) and not counts_ok([value], below):
            raise Problem(what, value).at(f"[{i}]").at(step)
    raise AssertionError("unreachable: counts_ok failed, so some value fails it alone")


def _ref(table: str, size: int) -> str:
    return f"an index into {table} (0..{size - 1})" if size else f"no value ({table} is empty)"


def decode_chunks(node: object, ndim: int) -> list[ChunkStorageMetadata]:
    """A tensor's ``chunks`` table: ``offsets`` flat, ``sizes`` as references to ``size_table``."""
    obj = json_object(node, CHUNK_TABLE_KEYS)
    rows = obj["size_table"]
    if type(rows) is not list:
        raise Problem("a JSON array of size arrays", rows).at(".size_table")
    table = []
    for i, row in enumerate(rows):
        try:
            check_dims(row, list, ndim=ndim)
        except Problem as problem:
            raise problem.at(f"[{i}]").at(".size_table") from None
        table.append(torch.Size(row))
    refs = _counts(obj["sizes"], ".sizes", below=len(table), what=_ref(".size_table", len(table)))
    flat = _counts(obj["offsets"], ".offsets")
    if len(flat) != len(refs) * ndim:
        raise Problem(
            f"expected {ndim} integers per chunk ({len(refs)} chunks in .sizes), found {len(flat)}",
            None,
            raw=True,
        ).at(".offsets")
    if not ndim:
        # Every 0-dim chunk is the same: one object, so a table repeating it (2 bytes per
        # chunk) costs 8 bytes per chunk, not an object each (docs/format.md §Costs).
        return [ChunkStorageMetadata(torch.Size(), table[0])] * len(refs) if refs else []
    offsets = list(map(torch.Size, zip(*[iter(flat)] * ndim, strict=True)))
    return list(map(ChunkStorageMetadata, offsets, map(table.__getitem__, refs)))


def decode_storage(
    node: object,
    entries: Mapping[str, TensorStorageMetadata | BytesStorageMetadata],
    *,
    pieces: bool = True,
) -> dict[MetadataIndex, ItemLocation] | None:
    """The storage columns: one value per item in each, keys referring to entries and chunks.
    ``pieces``: whether piece checksums may appear (version 3 on, rule D15)."""
    if node is None:
        return None
    obj = json_object(node, STORAGE_KEYS)
    files = obj["files"]
    if type(files) is not list:
        raise Problem("a JSON array of file paths", files).at(".files")
    for i, path in enumerate(files):
        try:
            file_path(path)
        except Problem as problem:
            raise problem.at(f"[{i}]").at(".files") from None
    columns = [obj[name] for name in _COLUMNS]
    entry, chunk, index, file, offset, length, sums = columns
    _counts(entry, ".entry", what=_ref("state_dict_metadata", len(entries)), below=len(entries))
    for name, values in zip(_COLUMNS[1:], columns[1:], strict=True):
        if type(values) is not list:
            raise Problem("a JSON array", values).at(f".{name}")
        if len(values) != len(entry):
            raise Problem(
                f"expected {len(entry)} values (one per item, as in .entry), found {len(values)}",
                None,
                raw=True,
            ).at(f".{name}")
    _counts(chunk, ".chunk", nulls=True)
    _counts(index, ".index", nulls=True)
    _counts(file, ".file", below=len(files), what=_ref(".files", len(files)))
    _counts(offset, ".offset")
    _counts(length, ".length")
    _checksums(sums, length, pieces)
    keys = _keys(list(entries.items()), entry, chunk, index)
    out = dict(
        zip(
            keys,
            checked_locations(list(map(files.__getitem__, file)), offset, length, sums),
            strict=True,
        )
    )
    if len(out) != len(keys):
        _duplicate(keys)
    return out


def _checksums(sums: list[Any], lengths: list[int], pieces: bool) -> None:
    present = [s for s in sums if s is not None]
    if set(map(type, present)) <= _STR_ONLY and all(map(CHECKSUM.fullmatch, present)):
        return  # whole-item checksums only: one C-level pass
    for i, (value, length) in enumerate(zip(sums, lengths, strict=True)):
        try:
            if pieces:
                checksum(value, length)
            else:
                whole_checksum(value)
        except Problem as problem:
            raise problem.at(f"[{i}]").at(".checksum") from None


def _keys(
    entries: list[tuple[str, TensorStorageMetadata | BytesStorageMetadata]],
    entry: list[int],
    chunk: list[int | None],
    index: list[int | None],
) -> list[MetadataIndex]:
    """MetadataIndex keys; each offset is the very ``offsets`` object of the chunk it names."""
    offsets = [
        [c.offsets for c in e.chunks] if isinstance(e, TensorStorageMetadata) else None
        for _, e in entries
    ]
    keys = []
    for i, (e, c, hint) in enumerate(zip(entry, chunk, index, strict=True)):
        of = offsets[e]
        if of is None:
            if c is not None:
                raise Problem("null (the entry is bytes)", c).at(f"[{i}]").at(".chunk")
            offset = None
        elif c is None or c >= len(of):
            raise (
                Problem(_ref(f"the tensor's {len(of)} chunks", len(of)), c)
                .at(f"[{i}]")
                .at(".chunk")
            )
        else:
            offset = of[c]
        # MetadataIndex.__init__ would copy the offset into a new torch.Size; set its fields
        # directly (it is a frozen dataclass, so through object.__setattr__ as it does).
        key = _new(MetadataIndex)
        _set(key, "__dict__", {"fqn": entries[e][0], "offset": offset, "index": hint})
        keys.append(key)
    return keys


def _duplicate(keys: list[MetadataIndex]) -> None:
    seen: dict[MetadataIndex, int] = {}
    for i, key in enumerate(keys):
        first = seen.setdefault(key, i)
        if first != i:
            raise (
                Problem(
                    f"a new entry and chunk offsets, found those of item [{first}] again",
                    None,
                    raw=True,
                )
                .at(f"[{i}]")
                .at(".chunk")
            )
