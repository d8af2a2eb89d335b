"""Costs proportional to input (#22 item 4): hostile metadata documents decode and validate in
linear time, within a stated multiple of their size in memory (docs/format.md, "Costs and
limits"). Bounds are ratios measured in the same run, never absolute timings."""

from __future__ import annotations

import json

import pytest
from _perf import perf_module

from dcp_impl import metadata as mf
from dcp_impl.errors import InvalidMetadataError

_hostile = perf_module("hostile_metadata")
DOCUMENTS = _hostile.DOCUMENTS
LAYOUTS = _hostile.LAYOUTS
boxes_of = _hostile.boxes_of
layout_metadata = _hostile.layout_metadata
peak = _hostile.peak
scaling = _hostile.scaling

PEAK_PER_DOCUMENT_BYTE = 50
"""docs/format.md's bound: ``loads`` traces at most this many bytes per document byte."""
SCALING = 5
"""How much worse than its baseline an operation may scale from n to 10n: a linear one
scales as its baseline does (1), a quadratic one ten times worse. The baseline (a linear pass
over the same input: ``json.loads``, building the chunks' boxes) absorbs what the machine
adds at larger sizes (caches, page faults) that is no fault of the code."""


def _decoding(family: str, n: int) -> float:
    return scaling(DOCUMENTS[family], mf.loads, json.loads, n)[2]


def _validation(layout: str, n: int) -> float:
    return scaling(lambda k: layout_metadata(layout, k), mf.validate, boxes_of, n)[2]


@pytest.mark.parametrize("family", sorted(DOCUMENTS))
def test_decoding_time_is_linear(family: str) -> None:
    worse = _decoding(family, 3_000)
    assert worse < SCALING, f"{family}: 10x the input scaled {worse:.1f}x worse than json"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_validation_time_is_linear(layout: str) -> None:
    worse = _validation(layout, 3_000)
    assert worse < SCALING, f"{layout}: 10x the chunks scaled {worse:.1f}x worse than boxes"


@pytest.mark.parametrize("family", sorted(DOCUMENTS))
def test_decoding_memory_is_a_stated_multiple_of_the_document(family: str) -> None:
    doc = DOCUMENTS[family](20_000)
    ratio = peak(lambda: mf.loads(doc)) / len(doc)
    assert ratio < PEAK_PER_DOCUMENT_BYTE, f"{family}: peak {ratio:.1f}x the document's size"


def _at_limit(limit: int) -> bytes:
    """A repeated-offsets document (the costliest per byte) of exactly ``limit`` bytes."""
    n = limit // 4
    while len(doc := DOCUMENTS["repeated-offsets"](n)) > limit:
        n -= (len(doc) - limit) // 4 + 1
    pad = limit - len(doc)
    return doc.replace(b'"version":null', b'"version":"' + b"v" * (pad + 2) + b'"', 1)


def _check_at_limit(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    monkeypatch.setattr(mf, "MAX_METADATA_BYTES", limit)
    doc = _at_limit(limit)
    assert len(doc) == limit
    ratio = peak(lambda: mf.loads(doc)) / len(doc)
    assert ratio < PEAK_PER_DOCUMENT_BYTE, f"peak {ratio:.1f}x the document's size"
    with pytest.raises(InvalidMetadataError, match="expected at most MAX_METADATA_BYTES"):
        mf.loads(doc + b" ")


def test_a_document_at_the_size_limit_stays_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _check_at_limit(monkeypatch, 1 << 20)  # the limit lowered: the same code, a quick run


@pytest.mark.nightly
def test_a_large_document_at_the_size_limit_stays_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _check_at_limit(monkeypatch, 64 << 20)


@pytest.mark.nightly
@pytest.mark.parametrize("family", sorted(DOCUMENTS))
def test_decoding_time_is_linear_at_scale(family: str) -> None:
    worse = _decoding(family, 100_000)
    assert worse < SCALING, f"{family}: 10x the input scaled {worse:.1f}x worse than json"


@pytest.mark.nightly
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_validation_time_is_linear_at_scale(layout: str) -> None:
    worse = _validation(layout, 50_000)
    assert worse < SCALING, f"{layout}: 10x the chunks scaled {worse:.1f}x worse than boxes"
