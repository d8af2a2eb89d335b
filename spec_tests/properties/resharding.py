"""Spec section 2: any save layout over N ranks loads into any layout over M ranks."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcp_impl.dtypes import by_torch
from dcp_impl.layout import Box
from spec_tests import strategies as sts
from spec_tests.backends import Backend, claims
from spec_tests.properties.checks import (
    LARGE_BYTES,
    Location,
    claimed,
    draw_tensor,
    kinds_for,
    load_boxes,
    pattern,
    sharded_save,
)
from spec_tests.properties.large import large_dtype, large_pattern
from spec_tests.sim import harness, shardings

__all__ = ["DIGIT_CUTS", "ReshardingProperties"]

# Sides up to about 100 in ordinary examples: chunk offsets of one, two and three digits meet
# in one tensor (a backend that orders chunks by their names as strings puts "10" before "9").
_LONG_SIDE = 100

#: Row offsets of the named chunked tensor: 1, 2 and 3 digits, each digit count's neighbours
#: sorting differently as strings ("10" < "100" < "101" < "11" < "2" < "9") and as numbers.
DIGIT_CUTS = (0, 2, 9, 10, 11, 99, 100, 101)
_DIGIT_SHAPE = (128, 12)


class ReshardingProperties:
    """Sharded saves (simulated ranks) loaded back in the same or another layout."""

    @pytest.mark.dcp_requires("multi-rank")
    @given(data=st.data())
    def test_same_layout_roundtrip(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Each rank loads back exactly the boxes it saved (one chunk per rank)."""
        value = draw_tensor(data, dcp_backend, min_dims=1, max_side=_LONG_SIDE)
        ranks = data.draw(st.integers(2, 4), label="ranks")
        layout = data.draw(
            sts.layouts(value.shape, ranks=ranks, kinds=sts.ONE_CHUNK_KINDS), label="layout"
        )
        with harness.repro(dcp_backend, dtype=value.dtype, layout=layout):
            location = dcp_location()
            sharded_save(dcp_backend, location, "w", value, layout)
            load_boxes(dcp_backend, location, "w", value, [b or () for b in layout.boxes])

    @pytest.mark.dcp_requires("multi-chunk")
    @given(data=st.data())
    def test_several_chunks_on_one_rank(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """One rank saving several chunks (and empty chunks) of a tensor loses nothing."""
        value = draw_tensor(data, dcp_backend, min_dims=1, max_side=_LONG_SIDE)
        layout = data.draw(
            sts.layouts(value.shape, ranks=1, kinds=sts.kinds_needing("multi-chunk")),
            label="layout",
        )
        with harness.repro(dcp_backend, dtype=value.dtype, layout=layout):
            location = dcp_location()
            sharded_save(dcp_backend, location, "w", value, layout)
            load_boxes(dcp_backend, location, "w", value, layout.boxes)

    @pytest.mark.dcp_requires("reshard", "multi-rank")
    @given(data=st.data())
    def test_reshard_one_chunk_layouts(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Row/column/grid/replicated saves load into any other boxes over any rank count."""
        self._reshard(dcp_backend, dcp_location, data, sts.ONE_CHUNK_KINDS)

    @pytest.mark.dcp_requires("reshard", "multi-rank", "multi-chunk")
    @given(data=st.data())
    def test_reshard_any_layout(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Arbitrary partitions, empty and replicated chunks load into any other boxes."""
        self._reshard(dcp_backend, dcp_location, data, sts.LAYOUT_KINDS)

    @pytest.mark.dcp_requires("reshard")
    @given(data=st.data())
    def test_load_sub_boxes(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """A whole-tensor save serves arbitrary sub-boxes (into strided destinations too)."""
        self._reshard(dcp_backend, dcp_location, data, ("single",), save_ranks=1)

    def test_chunk_offsets_of_every_digit_count(
        self, dcp_backend: Backend, dcp_location: Location
    ) -> None:
        """Chunks at row offsets of one, two and three digits, and column offsets 2 and 10,
        load back: all on one rank where ``multi-chunk`` is claimed, and one per rank over 12
        ranks where ``multi-rank`` is.

        Named, so every run has offsets whose order as strings ("10" < "100" < "9") is not
        their order as numbers, and rank numbers of two digits ("10" < "2" as strings: a
        backend that orders or names ranks' files or plans as text mixes them up); where
        ``reshard`` is claimed, boxes across chunks load too.
        """
        layouts = []
        if claims(dcp_backend, "multi-chunk"):
            layouts.append([_digit_boxes()])
        if claims(dcp_backend, "multi-rank"):
            layouts.append([[box] for box in _rank_boxes()])
        if not layouts:
            pytest.skip(f"backend {dcp_backend.name!r} claims neither multi-chunk nor multi-rank")
        dtypes = claimed(dcp_backend)
        dtype = next((d for d in dtypes if by_torch(d).itemsize >= 2), dtypes[0])
        value = pattern(dtype, _DIGIT_SHAPE)
        for per_rank in layouts:
            layout = sts.SaveLayout(_DIGIT_SHAPE, tuple(map(tuple, per_rank)), "guillotine")
            with harness.repro(dcp_backend, dtype=dtype, layout=layout):
                location = dcp_location()
                sharded_save(dcp_backend, location, "w", value, layout)
                load_boxes(dcp_backend, location, "w", value, per_rank)
                if claims(dcp_backend, "reshard"):
                    across = [
                        Box.full(_DIGIT_SHAPE), Box((8, 1), (95, 10)), Box((99, 0), (29, 11))
                    ]  # fmt: skip
                    load_boxes(dcp_backend, location, "w", value, [across], strided=True)

    @pytest.mark.dcp_requires("reshard", "multi-rank")
    def test_reshard_large(self, dcp_backend: Backend, dcp_location: Location) -> None:
        """A 64 MiB tensor saved in rows over 4 ranks loads as columns over 3 ranks.

        A fixed case, not a draw (:mod:`.large`): a failure reports at once, holding one case.
        """
        dtype = large_dtype(dcp_backend, 1, 3)
        cols = 4096
        shape = (LARGE_BYTES // (cols * by_torch(dtype).itemsize), cols)
        value = large_pattern(LARGE_BYTES, dtype, seed=cols).reshape(shape)
        save = sts.SaveLayout(
            value.shape, tuple(map(tuple, shardings.row_shards(value.shape, 4))), "rows"
        )
        with harness.repro(dcp_backend, dtype=value.dtype, shape=tuple(value.shape)):
            location = dcp_location()
            sharded_save(dcp_backend, location, "big", value, save)
            load_boxes(dcp_backend, location, "big", value, shardings.col_shards(value.shape, 3))

    def _reshard(
        self,
        backend: Backend,
        dcp_location: Location,
        data: st.DataObject,
        kinds: tuple[str, ...],
        save_ranks: int | None = None,
    ) -> None:
        value = draw_tensor(data, backend, max_side=_LONG_SIDE)
        allowed = tuple(k for k in kinds if k in kinds_for(backend)) or ("single",)
        n = save_ranks or data.draw(st.integers(1, 4), label="save ranks")
        m = data.draw(st.integers(1, 4), label="load ranks")
        case = data.draw(
            sts.reshard_cases(value.shape, save_ranks=n, load_ranks=m, save_kinds=allowed),
            label="case",
        )
        strided = data.draw(st.booleans(), label="strided destinations")
        with harness.repro(backend, dtype=value.dtype, case=case, strided=strided):
            location = dcp_location()
            sharded_save(backend, location, "w", value, case.save)
            load_boxes(backend, location, "w", value, case.load_boxes, strided=strided)


def _digit_boxes() -> list[Box]:
    """Row chunks between :data:`DIGIT_CUTS`; the last rows cut again at columns 2 and 10."""
    rows, cols = _DIGIT_SHAPE
    boxes = [Box((a, 0), (b - a, cols)) for a, b in itertools.pairwise(DIGIT_CUTS)]
    last = DIGIT_CUTS[-1]
    boxes += [Box((last, a), (rows - last, b - a)) for a, b in itertools.pairwise((0, 2, 10, cols))]
    return boxes


def _rank_boxes() -> list[Box]:
    """12 chunks, one per rank: the rows between :data:`DIGIT_CUTS`, the first rows cut at
    column 6 and the last at columns 2, 4 and 10 (so ranks 10 and 11 hold data)."""
    rows, cols = _DIGIT_SHAPE
    first, last = DIGIT_CUTS[1], DIGIT_CUTS[-1]
    boxes = [Box((0, a), (first, b - a)) for a, b in itertools.pairwise((0, 6, cols))]
    boxes += [Box((a, 0), (b - a, cols)) for a, b in itertools.pairwise(DIGIT_CUTS[1:])]
    boxes += [
        Box((last, a), (rows - last, b - a)) for a, b in itertools.pairwise((0, 2, 4, 10, cols))
    ]
    return boxes
