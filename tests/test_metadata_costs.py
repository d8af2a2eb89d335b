"""Costs proportional to input (#22 item 4): hostile metadata documents decode and validate in
linear time, within a stated multiple of their size in memory (docs/format.md, "Costs and
limits"). Bounds are ratios measured in the same run, never absolute timings."""

from __future__ import annotations

import gc
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    TensorProperties,
    TensorStorageMetadata,
)

from dcp_impl import metadata as mf
from dcp_impl.errors import InvalidMetadataError
from dcp_impl.layout import Box

PEAK_PER_DOCUMENT_BYTE = 50
"""docs/format.md's bound: ``loads`` traces at most this many bytes per document byte."""
SCALING = 5
"""How much worse than its baseline an operation may scale from n to 10n: a linear one
scales as its baseline does (1), a quadratic one ten times worse. The baseline (a linear pass
over the same input: ``json.loads``, building the chunks' boxes) absorbs what the machine
adds at larger sizes (caches, page faults) that is no fault of the code."""

_PROPS = {
    "dtype": "float32",
    "layout": "strided",
    "requires_grad": False,
    "memory_format": "contiguous_format",
    "pin_memory": False,
}


def _doc(entries: dict[str, Any], **top: Any) -> bytes:
    body = {
        "format": mf.FORMAT_NAME,
        "format_version": mf.FORMAT_VERSION,
        "version": None,
        "state_dict_metadata": entries,
        "planner_data": None,
        "storage_data": None,
        "storage_meta": None,
        **top,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _table(n: int, ndim: int, offsets: list[int], row: list[int]) -> dict[str, Any]:
    chunks = {"offsets": offsets, "sizes": [0] * n, "size_table": [row]}
    return {"kind": "tensor", "properties": _PROPS, "size": [n] * ndim, "chunks": chunks}


# Hostile documents of n chunks or entries: each the cheapest bytes per decoded object.
DOCUMENTS: dict[str, Callable[[int], bytes]] = {
    "distinct-offsets": lambda n: _doc({"t": _table(n, 1, list(range(n)), [1])}),
    "repeated-offsets": lambda n: _doc({"t": _table(n, 1, [0] * n, [1])}),
    "zero-dim-chunks": lambda n: _doc({"t": _table(n, 0, [], [])}),
    "bytes-entries": lambda n: _doc({f"{i:x}": {"kind": "bytes"} for i in range(n)}),
    "storage-items": lambda n: _doc(
        {"t": _table(n, 1, list(range(n)), [1])},
        storage_data={
            "files": ["d"],
            "entry": [0] * n,
            "chunk": list(range(n)),
            "index": [None] * n,
            "file": [0] * n,
            "offset": [0] * n,
            "length": [0] * n,
            "checksum": [None] * n,
        },
    ),
    "planner-paths": lambda n: _doc({}, planner_data={f"{i:x}": [0, 0, 0] for i in range(n)}),
}


def _square(n: int) -> int:
    return max(1, int(n**0.5))


def _boxes_1d(n: int) -> tuple[list[int], list[tuple[tuple[int, ...], tuple[int, ...]]]]:
    return [n], [((i,), (1,)) for i in range(n)]


def _boxes_grid(n: int) -> tuple[list[int], list[tuple[tuple[int, ...], tuple[int, ...]]]]:
    k = _square(n)
    return [k, k], [((i, j), (1, 1)) for i in range(k) for j in range(k)]


def _boxes_cross(n: int) -> tuple[list[int], list[tuple[tuple[int, ...], tuple[int, ...]]]]:
    h = n // 2  # rows of full-width strips, then a band of one-column strips
    rows = [((i, 0), (1, h)) for i in range(h)]
    return [2 * h, h], rows + [((h, j), (h, 1)) for j in range(h)]


def _boxes_spiral(n: int) -> tuple[list[int], list[tuple[tuple[int, ...], tuple[int, ...]]]]:
    side = n // 2
    r0, r1, c0, c1, boxes = 0, side, 0, side, []
    while r0 < r1 and c0 < c1:  # peel one strip per side, turning inwards
        turn = len(boxes) % 4
        if turn == 0:
            boxes.append(((r0, c0), (1, c1 - c0)))
            r0 += 1
        elif turn == 1:
            boxes.append(((r0, c1 - 1), (r1 - r0, 1)))
            c1 -= 1
        elif turn == 2:
            boxes.append(((r1 - 1, c0), (1, c1 - c0)))
            r1 -= 1
        else:
            boxes.append(((r0, c0), (r1 - r0, 1)))
            c0 += 1
    return [side, side], boxes


LAYOUTS = {"1d": _boxes_1d, "grid": _boxes_grid, "cross": _boxes_cross, "spiral": _boxes_spiral}


def _metadata(layout: str, n: int) -> Metadata:
    shape, boxes = LAYOUTS[layout](n)
    chunks = [ChunkStorageMetadata(torch.Size(o), torch.Size(s)) for o, s in boxes]
    entry = TensorStorageMetadata(TensorProperties(torch.float32), torch.Size(shape), chunks)
    return Metadata({"t": entry})


def _best(calls: list[Callable[[], object]], rounds: int = 3) -> list[float]:
    """Each call's best time over ``rounds`` interleaved rounds: the least disturbed by other
    work on the machine, and every call as disturbed as the others."""
    best = [float("inf")] * len(calls)
    for _ in range(rounds):
        for i, call in enumerate(calls):
            gc.collect()
            start = time.perf_counter()
            call()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def _peak(call: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _scaling(
    make: Callable[[int], Any],
    call: Callable[[Any], object],
    baseline: Callable[[Any], object],
    n: int,
) -> float:
    """How much worse ``call`` scales from ``n`` to ``10 n`` than ``baseline`` does, on the
    inputs ``make`` builds."""
    small, large = make(n), make(10 * n)
    times = _best(
        [lambda: call(small), lambda: call(large), lambda: baseline(small), lambda: baseline(large)]
    )
    return (times[1] / times[0]) / (times[3] / times[2])


def _boxes(md: Metadata) -> object:
    entry = md.state_dict_metadata["t"]
    assert isinstance(entry, TensorStorageMetadata)
    return [Box.of(chunk) for chunk in entry.chunks]


def _decoding(family: str, n: int) -> float:
    return _scaling(DOCUMENTS[family], mf.loads, json.loads, n)


def _validation(layout: str, n: int) -> float:
    return _scaling(lambda k: _metadata(layout, k), mf.validate, _boxes, n)


@pytest.mark.parametrize("family", sorted(DOCUMENTS))
def test_decoding_time_is_linear(family: str) -> None:
    scaling = _decoding(family, 3_000)
    assert scaling < SCALING, f"{family}: 10x the input scaled {scaling:.1f}x worse than json"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_validation_time_is_linear(layout: str) -> None:
    scaling = _validation(layout, 3_000)
    assert scaling < SCALING, f"{layout}: 10x the chunks scaled {scaling:.1f}x worse than boxes"


@pytest.mark.parametrize("family", sorted(DOCUMENTS))
def test_decoding_memory_is_a_stated_multiple_of_the_document(family: str) -> None:
    doc = DOCUMENTS[family](20_000)
    ratio = _peak(lambda: mf.loads(doc)) / len(doc)
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
    ratio = _peak(lambda: mf.loads(doc)) / len(doc)
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
    scaling = _decoding(family, 100_000)
    assert scaling < SCALING, f"{family}: 10x the input scaled {scaling:.1f}x worse than json"


@pytest.mark.nightly
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_validation_time_is_linear_at_scale(layout: str) -> None:
    scaling = _validation(layout, 50_000)
    assert scaling < SCALING, f"{layout}: 10x the chunks scaled {scaling:.1f}x worse than boxes"
