"""The conformance strategies: records are what they claim, shrinking reaches simple cases."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from dcp_impl.dtypes import DTYPES
from dcp_impl.layout import Box, first_overlap, holes, out_of_bounds
from spec_tests import strategies as sts
from spec_tests.sim.harness import as_bytes

_FIND = settings(max_examples=1000, database=None, suppress_health_check=list(HealthCheck))


def _shape_and_ranks() -> st.SearchStrategy[tuple[tuple[int, ...], int]]:
    return st.tuples(sts.shapes(max_dims=3), st.integers(1, 4))


@given(data=st.data(), case=_shape_and_ranks())
def test_layouts_cover_exactly_as_labelled(
    data: st.DataObject, case: tuple[tuple[int, ...], int]
) -> None:
    shape, ranks = case
    layout = data.draw(sts.layouts(shape, ranks=ranks))
    assert layout.ranks == ranks
    boxes = layout.all_boxes
    assert all(b.ndim == len(shape) and not out_of_bounds(shape, b) for b in boxes)
    assert holes(shape, boxes) == []
    if layout.is_partition:
        assert first_overlap(boxes) is None
        assert sum(b.numel for b in boxes) == math.prod(shape)
    if layout.kind == "replicated":
        assert all(rank == (Box.full(shape),) for rank in layout.boxes)


@given(data=st.data(), case=_shape_and_ranks())
def test_layout_kinds_are_respected(data: st.DataObject, case: tuple[tuple[int, ...], int]) -> None:
    shape, ranks = case
    kinds = data.draw(st.sets(st.sampled_from(sts.LAYOUT_KINDS), min_size=1))
    layout = data.draw(sts.layouts(shape, ranks=ranks, kinds=kinds))
    assert layout.kind in kinds | {"single"}


@given(data=st.data(), case=_shape_and_ranks(), load_ranks=st.integers(1, 4))
def test_reshard_cases_fit_the_tensor(
    data: st.DataObject, case: tuple[tuple[int, ...], int], load_ranks: int
) -> None:
    shape, ranks = case
    reshard = data.draw(sts.reshard_cases(shape, save_ranks=ranks, load_ranks=load_ranks))
    assert reshard.save.ranks == ranks
    assert len(reshard.load_boxes) == load_ranks
    for box in (b for rank in reshard.load_boxes for b in rank):
        assert not out_of_bounds(shape, box)
    if reshard.load_kind == "full":
        assert all(rank == (Box.full(shape),) for rank in reshard.load_boxes)


def test_layouts_shrink_to_one_chunk() -> None:
    layout = find(
        sts.layouts((6, 4), ranks=3, kinds=["guillotine"]), lambda _: True, settings=_FIND
    )
    assert len(layout.all_boxes) == 1


def test_multi_chunk_layouts_shrink_to_two_chunks() -> None:
    layout = find(sts.layouts((6, 4), ranks=2), lambda lay: lay.multi_chunk, settings=_FIND)
    assert len(layout.all_boxes) == 2


def test_shapes_shrink_small() -> None:
    assert find(sts.shapes(), lambda s: len(s) >= 2, settings=_FIND) == (0, 0)
    small = find(sts.shapes(), lambda s: math.prod(s) >= 6, settings=_FIND)
    assert math.prod(small) == 6
    assert len(small) <= 2


@pytest.mark.parametrize("row", DTYPES, ids=lambda r: r.name)
def test_every_dtype_is_reachable_and_builds_tensors(row: object) -> None:
    found = find(sts.dtypes(), lambda r: r is row, settings=_FIND)
    value = find(sts.tensor_values(found, (2, 3)), lambda _: True, settings=_FIND)
    assert value.dtype == found.torch_dtype
    assert tuple(value.shape) == (2, 3)


@pytest.mark.parametrize(
    ("dtype", "pattern"),
    [
        (torch.float32, [0, 0, 0, 0x80]),  # -0.0
        (torch.float32, [0xFF, 0xFF, 0xFF, 0x7F]),  # NaN with a full payload
        (torch.float16, [0x00, 0x7C]),  # +inf
        (torch.int64, [0] * 7 + [0x80]),  # int64 minimum
    ],
)
def test_special_bit_patterns_are_reachable(dtype: torch.dtype, pattern: list[int]) -> None:
    find(
        sts.tensor_values(dtype, (3,)),
        lambda t: as_bytes(t[:1]).tolist() == pattern,
        settings=_FIND,
    )


@given(data=st.data())
def test_bool_values_are_zero_or_one(data: st.DataObject) -> None:
    value = data.draw(sts.tensor_values(torch.bool, data.draw(sts.shapes())))
    assert set(as_bytes(value).tolist()) <= {0, 1}


@settings(max_examples=5)
@given(data=st.data())
def test_large_tensors_come_from_a_seed(data: st.DataObject) -> None:
    value = data.draw(sts.tensor_values(torch.float32, (512, 256)))
    assert value.is_contiguous()
    assert tuple(value.shape) == (512, 256)


def test_noncontiguous_views_keep_values_and_reach_strided() -> None:
    base = torch.arange(24, dtype=torch.int16).reshape(2, 3, 4)
    view = find(sts.noncontiguous(base), lambda v: not v.is_contiguous(), settings=_FIND)
    assert torch.equal(view, base)
    four = torch.arange(16, dtype=torch.uint8).reshape(1, 2, 2, 4)
    cl = find(
        sts.noncontiguous(four),
        lambda v: v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous(),
        settings=_FIND,
    )
    assert torch.equal(cl, four)


def test_names_reach_dots_spaces_slashes_and_unicode() -> None:
    for wanted in (".", " ", "/", "é"):

        def holds(name: str, wanted: str = wanted) -> bool:
            return wanted in name

        assert wanted in find(sts.names(), holds, settings=_FIND)


@given(state=sts.state_dicts())
def test_state_dicts_flatten_without_collisions(state: dict[str, object]) -> None:
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict

    flat, _ = flatten_state_dict(state)  # raises on a duplicate flattened name
    assert flat


def test_state_dicts_reach_nesting_and_objects() -> None:
    find(sts.state_dicts(), lambda s: any(isinstance(v, dict) for v in s.values()), settings=_FIND)
    find(
        sts.state_dicts(),
        lambda s: any(not isinstance(v, (dict, torch.Tensor)) for v in s.values()),
        settings=_FIND,
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: sts.dtypes(allowed=[]),
        lambda: sts.shapes(min_dims=-1),
        lambda: sts.shapes(min_dims=3, max_dims=2),
        lambda: sts.tensor_values(torch.float32, (-1,)),
        lambda: sts.layouts((2,), ranks=0),
        lambda: sts.layouts((2,), ranks=1, kinds=["bogus"]),
        lambda: sts.reshard_cases((2,), save_ranks=1, load_ranks=0),
        lambda: sts.names(max_size=0),
    ],
)
def test_arguments_are_validated_eagerly(make: object) -> None:
    with pytest.raises(ValueError, match=r"."):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("boxes", "kind"),
    [
        (((Box((0,), (3,)),),), "rows"),  # leaves a hole
        (((Box((0,), (5,)),),), "single"),  # out of bounds
        (((Box((0,), (4,)),), (Box((0,), (4,)),)), "rows"),  # overlap in a partition
        (((Box((0,), (0,)), Box((0,), (4,))),), "empty"),  # offsets shared by unequal boxes
    ],
)
def test_save_layout_rejects_what_its_label_denies(
    boxes: tuple[tuple[Box, ...], ...], kind: str
) -> None:
    with pytest.raises(ValueError, match=r"."):
        sts.SaveLayout((4,), boxes, kind)
