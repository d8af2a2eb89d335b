"""Checkpoint ``Metadata`` <-> a safe, versioned JSON document, and its validation.

The format is specified in ``docs/format.md``; each MUST rule there names the
error raised here. Parsing is strict and bounded: JSON only (never pickle),
the input size is checked before parsing, and every value is type- and
range-checked. Any malformed input raises :class:`InvalidMetadataError` whose
message starts with the JSON path of the offending value.

This package's ``__init__`` is the public surface; encoding lives in
:mod:`dcp_impl.metadata._encode`, parsing and decoding in :mod:`dcp_impl.metadata._decode`,
what both share (value checks, ItemLocation) in :mod:`dcp_impl.metadata._values`, and the
geometry checks of :func:`validate` in :mod:`dcp_impl.metadata._validate`.
"""

from __future__ import annotations

import json

from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from dcp_impl._collector import collector_paused
from dcp_impl.errors import InvalidMetadataError
from dcp_impl.metadata._decode import decode, parse
from dcp_impl.metadata._encode import encode
from dcp_impl.metadata._validate import validate as _validate_geometry
from dcp_impl.metadata._validate import validate_storage_keys
from dcp_impl.metadata._values import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_NDIM,
    ItemLocation,
    Problem,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_METADATA_BYTES",
    "MAX_NDIM",
    "ItemLocation",
    "dumps",
    "loads",
    "validate",
    "validate_storage_keys",
    "with_load_id",
]

MAX_METADATA_BYTES = 1024 * 1024 * 1024
"""Largest accepted document, in UTF-8 bytes; checked before parsing."""


def dumps(metadata: Metadata) -> str:
    """Encode ``metadata`` as a compact, deterministic JSON document.

    Dict order is kept, so the same Metadata always gives the same text and
    ``dumps(loads(text)) == text`` for any text dumps produced. Raises
    :class:`InvalidMetadataError` naming the first value the format cannot
    hold (e.g. a custom planner_data object, a non-ItemLocation storage value).
    """
    try:
        document = encode(metadata)
    except Problem as problem:
        raise InvalidMetadataError(f"cannot encode Metadata: {problem.describe('$')}") from (
            problem.__cause__
        )
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def loads(text: str | bytes | bytearray) -> Metadata:
    """Decode a document written by :func:`dumps`; reject anything else.

    Checks structure, types and ranges (see docs/format.md), not geometry:
    call :func:`validate` for chunk bounds, overlaps and coverage.
    """
    with collector_paused():
        # Read at call time: the limit is a module attribute callers (and tests) may lower.
        document = parse(text, limit=MAX_METADATA_BYTES)
        try:
            return decode(document)
        except Problem as problem:
            raise InvalidMetadataError(problem.describe("$")) from problem.__cause__


def validate(metadata: Metadata, *, allow_partial: bool = False) -> None:
    """Check chunk geometry and storage keys; raise InvalidMetadataError at the first problem.

    Every tensor's chunks must have the tensor's rank, lie inside it and not
    overlap; unless ``allow_partial``, they must cover it completely. Where
    ``storage_data`` is a dict keyed by MetadataIndex, every key must name an
    existing entry (and, for tensors, one of its chunks' offsets). Costs O(n log n) in the
    number of chunks (docs/format.md, "Costs and limits").
    """
    with collector_paused():
        _validate_geometry(metadata, allow_partial=allow_partial)


def with_load_id(metadata: Metadata, load_id: str) -> Metadata:
    """``metadata`` as a reader returns it: ``storage_meta.load_id`` set to this load's id."""
    if metadata.storage_meta is None:
        metadata.storage_meta = StorageMeta()
    metadata.storage_meta.load_id = load_id
    return metadata
