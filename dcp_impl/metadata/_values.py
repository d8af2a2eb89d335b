"""What encoding and decoding of the metadata format share: limits, names, checks, ItemLocation.

Both directions check the same values (strings of Unicode scalar values, int64 counts,
dimension lists, file locations) and report a bad one as a :class:`Problem` that collects
its JSON path on the way up; :mod:`dcp_impl.metadata` turns it into an
:class:`~dcp_impl.errors.InvalidMetadataError`. The format is specified in docs/format.md.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch

from dcp_impl.errors import InvalidMetadataError
from dcp_impl.transfer import CHECKSUM_TEXT, Checksums

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_NDIM",
    "MAX_INT",
    "MISSING",
    "LAYOUTS",
    "LAYOUT_NAMES",
    "MEMORY_FORMATS",
    "MEMORY_FORMAT_NAMES",
    "EXPECTED_LAYOUT",
    "EXPECTED_MEMORY_FORMAT",
    "ItemLocation",
    "checked_locations",
    "Problem",
    "show",
    "key_step",
    "string",
    "opt_string",
    "flag",
    "count",
    "check_dims",
    "check_chunk",
    "file_path",
    "checksum",
    "whole_checksum",
    "CHECKSUM",
    "member",
    "field",
    "string_at",
    "path_item",
]

FORMAT_NAME = "dcp_impl.metadata"
FORMAT_VERSION = 4
MAX_NDIM = 64
"""Most dimensions a tensor or chunk may have (torch itself allows 64)."""
MAX_INT = 2**63 - 1  # every size, offset and index must fit an int64

# torch's layout and memory-format objects, by the attribute name we store.
LAYOUTS = {
    name: getattr(torch, name)
    for name in (
        *("strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc"),
        *("_mkldnn", "jagged"),
    )
}
MEMORY_FORMATS = {
    name: getattr(torch, name)
    for name in ("contiguous_format", "channels_last", "channels_last_3d", "preserve_format")
}
LAYOUT_NAMES = {v: k for k, v in LAYOUTS.items()}
MEMORY_FORMAT_NAMES = {v: k for k, v in MEMORY_FORMATS.items()}
EXPECTED_LAYOUT = f"a layout in {sorted(LAYOUTS)}"
EXPECTED_MEMORY_FORMAT = f"a memory format in {sorted(MEMORY_FORMATS)}"

CHECKSUM = re.compile(r"[a-z][a-z0-9_]{0,31}:[0-9a-f]{1,128}")
"""What a whole-item checksum matches in full: ``"<algorithm>:<lowercase hex digest>"`` (the
only form before version 3; version 3 also has piece checksums, rule D15)."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_DRIVE = re.compile(r"[A-Za-z]:")
_BAD_PARTS = frozenset({"", ".", ".."})
_REPR = reprlib.Repr()  # bounded: a hostile value may be huge
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxdict = 4
MISSING = object()  # what a lookup of an absent key gives

_T = TypeVar("_T")


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
    """None, a whole-item checksum ``"<algorithm>:<lowercase hex digest>"`` (e.g.
    ``"xxh3_64:0123456789abcdef"``), or piece checksums ``"<algorithm>@<piece size>:<digest
    1>...<digest n>"``, one digest per piece of the item (docs/format.md, rule D15)."""

    def __post_init__(self) -> None:
        try:
            _check_location(self.path, self.offset, self.length, self.checksum)
        except Problem as problem:
            raise InvalidMetadataError(f"ItemLocation{problem.describe()}") from problem


def checked_locations(
    paths: Sequence[str], offsets: Sequence[int], lengths: Sequence[int], sums: Sequence[str | None]
) -> list[ItemLocation]:
    """ItemLocations of values the caller has already checked in bulk (see ``_columns``).

    Skips ``__post_init__``, whose per-object checks would repeat those bulk checks and
    dominate decoding a document of millions of items; the fields are set through the slots'
    descriptors, as a frozen dataclass's own ``__init__`` does.
    """
    made = [_new(ItemLocation) for _ in range(len(paths))]
    for name, values in (
        ("path", paths),
        ("offset", offsets),
        ("length", lengths),
        ("checksum", sums),
    ):
        deque(map(getattr(ItemLocation, name).__set__, made, values), maxlen=0)
    return made


_new = object.__new__


# --- problems and their JSON paths ------------------------------------------------------------


class Problem(Exception):
    """A bad value somewhere below; each level on the way up adds its path step."""

    def __init__(self, expected: str, found: object, *, raw: bool = False) -> None:
        super().__init__(expected)
        self.message = expected if raw else f"expected {expected}, found {show(found)}"
        self.steps: list[str] = []

    def at(self, step: str) -> Problem:
        self.steps.append(step)
        return self

    def describe(self, root: str = "") -> str:
        return f"{root}{''.join(reversed(self.steps))}: {self.message}"


def show(value: object) -> str:
    """A short description of a found value: its JSON (or Python) type and a bounded repr."""
    if value is MISSING:
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


def key_step(key: object) -> str:
    """A path step for a key: ``["w.0"]`` (escaped when the name is not valid UTF-8)."""
    if type(key) is not str:
        return f"[{show(key)}]"
    return f"[{json.dumps(key, ensure_ascii=not _is_utf8(key))}]"


def _is_utf8(text: str) -> bool:
    return text.isascii() or _SURROGATE.search(text) is None


# --- scalar checks ----------------------------------------------------------------------------


def string(value: object) -> str:
    if type(value) is str and _is_utf8(value):
        return value
    if type(value) is not str:
        raise Problem("a string", value)
    raise Problem("a string of Unicode scalar values (no lone surrogates)", value)


def opt_string(value: object) -> str | None:
    return None if value is None else string(value)


def flag(value: object) -> bool:
    if type(value) is not bool:
        raise Problem("true or false", value)
    return value


def count(value: object) -> int:
    """A non-negative int64; bool is rejected although it subclasses int."""
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise Problem("an integer in [0, 2**63-1]", value)
    return value


def check_dims(value: object, container: type, *, ndim: int | None = None) -> None:
    """Sizes or offsets: a ``container`` (tuple when encoding, list when decoding) of counts."""
    if not isinstance(value, container):
        raise Problem(f"a {'tuple' if container is tuple else 'JSON array'} of integers", value)
    dims = cast("Sequence[object]", value)
    if ndim is None and len(dims) > MAX_NDIM:
        raise Problem(f"at most {MAX_NDIM} dimensions, found {len(dims)}", None, raw=True)
    if ndim is not None and len(dims) != ndim:
        raise Problem(f"{ndim} dimensions (the tensor's), found {len(dims)}", None, raw=True)
    for i, v in enumerate(dims):  # a plain loop: the hot path of a 100k-chunk document
        if type(v) is not int or v < 0 or v > MAX_INT:
            raise Problem("an integer in [0, 2**63-1]", v).at(f"[{i}]")


def check_chunk(offsets: object, sizes: object, container: type, ndim: int) -> None:
    """A chunk's offsets and sizes: ``ndim`` counts each (see :func:`check_dims`)."""
    step = ".offsets"
    try:
        check_dims(offsets, container, ndim=ndim)
        step = ".sizes"
        check_dims(sizes, container, ndim=ndim)
    except Problem as problem:
        raise problem.at(step) from None


def member(table: Mapping[Any, _T], key: object, expected: str, step: str) -> _T:
    """``table[key]``; a missing key is a problem at ``step`` that says ``expected``."""
    if key not in table:
        raise Problem(expected, key).at(step)
    return table[key]


def file_path(value: object) -> str:
    """A stored file's path: relative, '/'-separated, no empty, '.' or '..' part (rule D13)."""
    name = string(value)
    if not name or name[0] == "/" or "\\" in name or "\0" in name or _DRIVE.match(name):
        raise Problem("a relative '/'-separated file path", name)
    if not _BAD_PARTS.isdisjoint(name.split("/")):
        raise Problem("a path without empty, '.' or '..' parts", name)
    return name


def whole_checksum(value: object) -> str | None:
    """None or a whole-item checksum string (rule D13; all that versions 1 and 2 hold)."""
    if value is not None and not CHECKSUM.fullmatch(string(value)):
        raise Problem('null or "<algorithm>:<lowercase hex>"', value)
    return value  # type: ignore[return-value]


def checksum(value: object, length: int) -> str | None:
    """None, a whole-item checksum, or the piece checksums of an item of ``length`` bytes
    (rules D13, D15)."""
    if value is None:
        return None
    text = string(value)
    if CHECKSUM.fullmatch(text):
        return text
    if not CHECKSUM_TEXT.fullmatch(text):
        raise Problem(
            'null, "<algorithm>:<lowercase hex>" or "<algorithm>@<piece size>:<lowercase hex>"',
            value,
        )
    try:
        Checksums.parse(text, length)
    except InvalidMetadataError as err:
        raise Problem(f"{err}", None, raw=True) from None
    return text


def _check_location(path: object, offset: object, length: object, checksum_: object) -> None:
    step = ".path"
    try:
        file_path(path)
        step = ".offset"
        count(offset)
        step = ".length"
        count(length)
        step = ".checksum"
        checksum(checksum_, length)  # type: ignore[arg-type]
    except Problem as problem:
        raise problem.at(step) from None


def field(convert: Callable[[Any], Any], value: object, step: str) -> Any:
    """``convert(value)``, adding ``step`` to the path of any problem."""
    try:
        return convert(value)
    except Problem as problem:
        raise problem.at(step) from problem.__cause__


def string_at(value: object, step: str) -> str:
    return field(string, value, step)


def path_item(item: object, i: int) -> str | int:
    """One step of a flatten-mapping object path: a dict key (str) or a list index (int)."""
    return field(count if type(item) is int else string, item, f"[{i}]")
