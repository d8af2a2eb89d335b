"""docs/format.md §1, version 3: piece checksums (rule D15) round-trip exactly, hostile piece
tables are refused at their JSON path, and version 2 documents (whole-item checksums) still read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _metadata import (
    PROPERTY,
    as_version,
    assert_exact,
    edited,
    edited_v1,
    rejects,
    sample,
    sample_doc,
)
from hypothesis import given
from hypothesis import strategies as st
from torch.distributed.checkpoint.metadata import MetadataIndex

from dcp_impl.errors import InvalidMetadataError
from dcp_impl.metadata import FORMAT_VERSION, ItemLocation, dumps, loads
from dcp_impl.transfer import MAX_PIECE_SIZE, MIN_PIECE_SIZE, piece_checksum

_CHUNK = 4 * MIN_PIECE_SIZE + 5  # five pieces, the last one short


def _pieced(length: int = _CHUNK, piece: int = MIN_PIECE_SIZE) -> str:
    return piece_checksum(bytes(i % 253 for i in range(length)), piece)


def _with_piece_checksum(doc: dict[str, Any], text: str, length: int = _CHUNK) -> None:
    doc["storage_data"]["length"][0] = length
    doc["storage_data"]["checksum"][0] = text


@PROPERTY
@given(
    lengths=st.lists(st.integers(0, 6 * MIN_PIECE_SIZE), min_size=1, max_size=4),
    piece=st.sampled_from([MIN_PIECE_SIZE, 3 * MIN_PIECE_SIZE + 1, MAX_PIECE_SIZE]),
)
def test_piece_checksums_roundtrip_exactly(lengths: list[int], piece: int) -> None:
    md = sample()
    assert md.storage_data is not None
    keys = list(md.storage_data)
    for key, length in zip(keys, lengths, strict=False):
        md.storage_data[key] = ItemLocation("f", 0, length, _pieced(length, piece))
    text = dumps(md)
    assert json.loads(text)["format_version"] == FORMAT_VERSION
    assert_exact(loads(text), md)
    assert dumps(loads(text)) == text


def test_version_2_documents_still_decode() -> None:
    """A version-2 document (the sample: whole-item checksums) reads as it always did."""
    doc = as_version(sample_doc(), 2)
    assert_exact(loads(json.dumps(doc)), sample())
    assert json.loads(dumps(loads(json.dumps(doc))))["format_version"] == FORMAT_VERSION


def test_rule_piece_checksums() -> None:
    good = _pieced()
    assert loads(json.dumps(edited(lambda d: _with_piece_checksum(d, good))))
    digests = good.split(":")[1]
    cases = [
        (good[:-16], "expected 5 digests (one per 4096-byte piece of 16389 bytes)"),
        (good + "0" * 16, "expected 5 digests"),
        (good[:-1], "expected 5 digests"),
        (f"xxh3_64@0:{digests}", "<algorithm>@<piece size>:<lowercase hex>"),
        (f"xxh3_64@04096:{digests}", "<algorithm>@<piece size>:<lowercase hex>"),
        (f"xxh3_64@4095:{digests}", "expected a piece size in [4096, 1073741824], found 4095"),
        (f"xxh3_64@{MAX_PIECE_SIZE + 1}:{digests}", "expected a piece size in"),
        (f"xxh3_64@{10**19}:{digests}", "<algorithm>@<piece size>"),
        (f"xxh3_64@4096:{digests.upper()}", "<lowercase hex>"),
        (f"xxh3_64@4096:{digests[:-1]}g", "<lowercase hex>"),
        ("xxh3_64@4096:", "<algorithm>@<piece size>"),
        (f"xxh3_64@4096@4096:{digests}", "<algorithm>@<piece size>"),
    ]
    for text, fragment in cases:
        rejects(
            edited(lambda d, text=text: _with_piece_checksum(d, text)),
            "$.storage_data.checksum[0]",
            fragment,
        )
        with pytest.raises(InvalidMetadataError, match=r"^ItemLocation\.checksum: "):
            ItemLocation("f", 0, _CHUNK, text)
    # a hostile length cannot make the reader count (or allocate) its pieces
    rejects(
        edited(lambda d: _with_piece_checksum(d, f"xxh3_64@4096:{'0' * 16}", 2**63 - 1)),
        "$.storage_data.checksum[0]",
        "expected 2251799813685248 digests",
    )
    # piece checksums came with version 3: versions 1 and 2 hold whole-item checksums only
    v2 = as_version(edited(lambda d: _with_piece_checksum(d, good)), 2)
    rejects(v2, "$.storage_data.checksum[0]", 'null or "<algorithm>:<lowercase hex>"')

    def v1_edit(d: dict[str, Any]) -> None:
        d["storage_data"][0]["location"].update(length=_CHUNK, checksum=good)

    rejects(edited_v1(v1_edit), "$.storage_data[0].location.checksum", "<algorithm>:<lowercase")


def test_a_whole_item_checksum_is_one_piece() -> None:
    """An item of at most one piece keeps the whole-item form, as version 2 wrote it."""
    assert "@" not in _pieced(MIN_PIECE_SIZE, MIN_PIECE_SIZE)
    assert "@" in _pieced(MIN_PIECE_SIZE + 1, MIN_PIECE_SIZE)
    loc = ItemLocation("f", 0, MIN_PIECE_SIZE, _pieced(MIN_PIECE_SIZE))
    assert loc.checksum is not None
    assert loc.checksum.startswith("xxh3_64:")
    md = sample()
    assert md.storage_data is not None
    md.storage_data[MetadataIndex("step")] = loc
    assert_exact(loads(dumps(md)), md)
