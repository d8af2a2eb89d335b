"""Chunk geometry against a brute-force model that assigns every element to its owners."""

from __future__ import annotations

import collections
import itertools
import math
import re

import pytest
from _reads import sub_boxes
from hypothesis import assume, given
from hypothesis import strategies as st

from dcp_impl.errors import LayoutMismatchError
from dcp_impl.layout import (
    Box,
    byte_span,
    first_overlap,
    holes,
    intersect,
    out_of_bounds,
    overlaps,
    plan_reads,
    tiles,
)
from spec_tests.sim.shardings import chunk_1d, col_shards, grid, replicated, row_shards

Point = tuple[int, ...]


def points(box: Box) -> set[Point]:
    return set(
        itertools.product(*(range(o, o + s) for o, s in zip(box.offsets, box.sizes, strict=True)))
    )


shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)


@st.composite
def shape_and_boxes(draw: st.DrawFn, max_boxes: int = 5) -> tuple[tuple[int, ...], list[Box]]:
    shape = draw(shapes)
    return shape, draw(st.lists(sub_boxes(shape), max_size=max_boxes))


def test_zero_dim_box_holds_one_element() -> None:
    box = Box.full(())
    assert (box.numel, box.is_empty, points(box)) == (1, False, {()})
    assert intersect(box, box) == box
    assert holes((), []) == [box]
    assert holes((), [box]) == []


def test_box_rejects_inconsistent_fields() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        Box((0,), (1, 2))
    with pytest.raises(ValueError, match=">= 0"):
        Box((-1,), (2,))


def test_boxes_of_different_rank_are_a_layout_mismatch() -> None:
    with pytest.raises(LayoutMismatchError, match="differ in rank"):
        intersect(Box((0,), (2,)), Box((0, 0), (2, 2)))


@given(shape_and_boxes(max_boxes=2))
def test_intersection_matches_model(case: tuple[tuple[int, ...], list[Box]]) -> None:
    _, boxes = case
    assume(len(boxes) == 2)
    a, b = boxes
    common = points(a) & points(b)
    got = intersect(a, b)
    assert (set() if got is None else points(got)) == common
    assert overlaps(a, b) == bool(common)


@given(shape_and_boxes())
def test_first_overlap_matches_model(case: tuple[tuple[int, ...], list[Box]]) -> None:
    _, boxes = case
    pairs = [
        (i, j)
        for i, j in itertools.combinations(range(len(boxes)), 2)
        if points(boxes[i]) & points(boxes[j])
    ]
    assert first_overlap(boxes) == (min(pairs) if pairs else None)


@given(shape_and_boxes())
def test_tiles_matches_model(case: tuple[tuple[int, ...], list[Box]]) -> None:
    shape, boxes = case
    full = Box.full(shape)
    assume(all(full.contains(b) for b in boxes))
    counts = collections.Counter(p for b in boxes for p in points(b))
    exact = set(counts) == points(full) and set(counts.values()) <= {1}
    assert tiles(shape, boxes) in (exact, None)


@given(shape_and_boxes())
def test_holes_are_exactly_the_uncovered_elements(case: tuple[tuple[int, ...], list[Box]]) -> None:
    shape, boxes = case
    covered = set().union(*(points(b) for b in boxes))
    found = holes(shape, boxes)
    hole_points = [points(h) for h in found]
    assert all(not h.is_empty for h in found)
    assert sum(map(len, hole_points)) == len(set().union(*hole_points)), "holes overlap"
    assert set().union(*hole_points) == points(Box.full(shape)) - covered


@given(shapes, st.data())
def test_out_of_bounds_matches_model(shape: tuple[int, ...], data: st.DataObject) -> None:
    box = data.draw(sub_boxes(tuple(n + 2 for n in shape)))
    expected = not box.is_empty and not points(box) <= points(Box.full(shape))
    if box.is_empty:
        expected = any(o > n for o, n in zip(box.offsets, shape, strict=True))
    assert out_of_bounds(shape, box) == expected
    assert out_of_bounds((*shape, 1), box)


@given(shape_and_boxes(), st.data())
def test_plan_reads_covers_request_exactly_once(
    case: tuple[tuple[int, ...], list[Box]], data: st.DataObject
) -> None:
    shape, saved = case
    request = data.draw(sub_boxes(shape))
    owners = {p: [i for i, b in enumerate(saved) if p in points(b)] for p in points(request)}
    if not all(owners.values()):
        with pytest.raises(LayoutMismatchError, match="not covered") as info:
            plan_reads(saved, request)
        missing = {p for p, o in owners.items() if not o}
        corner = re.search(r"holes at offsets=\(([\d, ]*)\)", str(info.value))
        assert corner is not None, str(info.value)
        assert tuple(int(v) for v in corner.group(1).split(",") if v.strip()) in missing
        return
    filled: dict[Point, int] = {}
    for copy in plan_reads(saved, request):
        piece = Box(copy.dest_offsets, copy.lengths)
        source = Box(copy.source_offsets, copy.lengths)
        assert Box.full(saved[copy.source].sizes).contains(source)
        for rel in points(piece):
            dest = tuple(r + o for r, o in zip(rel, request.offsets, strict=True))
            src = tuple(
                r - d + s + base
                for r, d, s, base in zip(
                    rel,
                    copy.dest_offsets,
                    copy.source_offsets,
                    saved[copy.source].offsets,
                    strict=True,
                )
            )
            assert dest == src, "a copy must move an element to the same global coordinates"
            assert dest not in filled, f"element {dest} copied twice"
            assert copy.source in owners[dest]
            filled[dest] = copy.source
    assert set(filled) == points(request)


def test_plan_reads_reports_hole_coordinates() -> None:
    saved = [Box((0, 0), (2, 4))]
    with pytest.raises(LayoutMismatchError, match=r"holes at offsets=\(2, 0\) sizes=\(1, 4\)"):
        plan_reads(saved, Box((0, 0), (3, 4)))


def test_plan_reads_prefers_the_first_replica() -> None:
    saved = [Box((0,), (4,)), Box((0,), (4,))]
    assert [c.source for c in plan_reads(saved, Box((1,), (2,)))] == [0]


@given(shapes, st.data(), st.sampled_from([1, 2, 4]))
def test_byte_span_holds_the_sub_box(
    shape: tuple[int, ...], data: st.DataObject, itemsize: int
) -> None:
    sub = data.draw(sub_boxes(shape))
    start, length, exact = byte_span(shape, sub, itemsize)
    if sub.is_empty:
        assert (length, exact) == (0, True)
        return
    strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    linear = sorted(sum(i * s for i, s in zip(p, strides, strict=True)) for p in points(sub))
    assert start == linear[0] * itemsize
    assert length == (linear[-1] - linear[0] + 1) * itemsize
    assert exact == (linear == list(range(linear[0], linear[-1] + 1)))


def test_byte_span_rejects_sub_box_outside_chunk() -> None:
    with pytest.raises(LayoutMismatchError, match="outside"):
        byte_span((2, 2), Box((1, 0), (2, 2)), 1)


@given(st.integers(0, 40), st.integers(1, 9))
def test_chunk_1d_matches_torch_chunk(length: int, parts: int) -> None:
    import torch

    pieces = chunk_1d(length, parts)
    expected = [len(c) for c in torch.arange(length).chunk(parts)] if length else []
    assert [s for _, s in pieces if s] == [s for s in expected if s]
    assert len(pieces) == parts
    assert sum(s for _, s in pieces) == length
    assert all(o + s <= length for o, s in pieces)


@pytest.mark.parametrize(
    "layout",
    [row_shards((7, 3), 4), col_shards((2, 5), 3), grid((5, 4, 2), 2, 3), row_shards((0, 3), 2)],
    ids=["rows", "cols", "grid", "empty"],
)
def test_shard_layouts_partition_the_tensor(layout: list[list[Box]]) -> None:
    flat = [box for rank in layout for box in rank]
    shape = tuple(max(e) for e in zip(*(b.ends for b in flat), strict=True))
    assert first_overlap(flat) is None
    assert holes(shape, flat) == []


def test_replicated_layout_overlaps_everywhere() -> None:
    flat = [box for rank in replicated((3,), 2) for box in rank]
    assert first_overlap(flat) == (0, 1)
