"""Strategies for sharding layouts, with ONE table of layout kinds.

Each :class:`LayoutKind` names a way to lay a tensor out over ranks, says what a save of it
exercises (``needs``: capabilities such as ``multi-rank``), whether it partitions the tensor
and whether every rank holds at most one chunk, where it applies, and how it is drawn.
Properties pick kinds from the table (:func:`kinds_within`, :func:`kinds_needing`,
:data:`ONE_CHUNK_KINDS`) instead of spelling them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from hypothesis import event
from hypothesis import strategies as st

from dcp_impl.layout import Box, first_overlap, holes, out_of_bounds
from spec_tests.sim import shardings as fixed
from spec_tests.strategies.tensors import check_int

__all__ = [
    "KINDS",
    "LAYOUT_KINDS",
    "ONE_CHUNK_KINDS",
    "LayoutKind",
    "ReshardCase",
    "SaveLayout",
    "kinds_needing",
    "kinds_within",
    "layouts",
    "reshard_cases",
]

RankBoxes = list[list[Box]]
Draw = Callable[[st.DrawFn, tuple[int, ...], int], RankBoxes]


@dataclass(frozen=True, slots=True)
class LayoutKind:
    """One way to lay a tensor out over ranks: what it needs, where it fits, how it is drawn."""

    name: str
    draw: Draw
    needs: frozenset[str] = frozenset()  # capabilities a save of this kind exercises
    partition: bool = True  # every element is held exactly once
    one_chunk: bool = True  # no rank holds more than one chunk of the tensor
    min_dims: int = 0
    min_ranks: int = 1

    def fits(self, shape: tuple[int, ...], ranks: int) -> bool:
        """Whether this kind can lay out ``shape`` over ``ranks`` ranks."""
        return len(shape) >= self.min_dims and ranks >= self.min_ranks


@dataclass(frozen=True, slots=True)
class SaveLayout:
    """Which boxes of one tensor each rank holds when saving.

    ``kind`` labels how it was drawn; partitions (``single``, ``rows``,
    ``cols``, ``uneven``, ``grid``, ``guillotine``, ``empty``) hold every
    element exactly once, the replicated kinds hold some elements on several
    ranks. Boxes that share offsets are equal boxes (DCP's MetadataIndex keys
    chunks by offsets, so anything else would be deduplicated away).
    """

    shape: tuple[int, ...]
    boxes: tuple[tuple[Box, ...], ...]
    kind: str

    def __post_init__(self) -> None:
        if not self.boxes:
            raise ValueError("a SaveLayout needs at least one rank")
        if self.kind not in KINDS:
            raise ValueError(f"layout kind {self.kind!r} is not one of {LAYOUT_KINDS}")
        by_offsets: dict[tuple[int, ...], Box] = {}
        for box in self.all_boxes:
            if box.ndim != len(self.shape) or out_of_bounds(self.shape, box):
                raise ValueError(f"box {box} does not fit a tensor of shape {self.shape}")
            seen = by_offsets.setdefault(box.offsets, box)
            if seen != box and not (seen.is_empty and box.is_empty):
                raise ValueError(f"boxes {seen} and {box} share offsets but differ")
        if holes(self.shape, self.all_boxes):
            raise ValueError(f"{self.kind} layout leaves holes in shape {self.shape}")
        if self.is_partition and first_overlap(self.all_boxes) is not None:
            raise ValueError(f"{self.kind} layout is labelled a partition but boxes overlap")

    @property
    def ranks(self) -> int:
        """Number of ranks taking part in the save."""
        return len(self.boxes)

    @property
    def all_boxes(self) -> list[Box]:
        """Every box of every rank, rank by rank."""
        return [box for rank in self.boxes for box in rank]

    @property
    def is_partition(self) -> bool:
        """True when every element is held by exactly one box."""
        return KINDS[self.kind].partition

    @property
    def multi_chunk(self) -> bool:
        """True when some rank holds several boxes of the tensor."""
        return any(len(rank) > 1 for rank in self.boxes)

    @property
    def multi_rank(self) -> bool:
        """True when more than one rank holds a box."""
        return sum(1 for rank in self.boxes if rank) > 1


@dataclass(frozen=True, slots=True)
class ReshardCase:
    """A save layout and an independent load request over another number of ranks.

    ``load_boxes[r]`` are the regions rank ``r`` asks for; they need not
    partition the tensor (only requested regions are read). The expected
    answer for each is the same region of the saved tensor.
    """

    save: SaveLayout
    load_boxes: tuple[tuple[Box, ...], ...]
    load_kind: str

    def __post_init__(self) -> None:
        for box in (b for rank in self.load_boxes for b in rank):
            if box.ndim != len(self.save.shape) or out_of_bounds(self.save.shape, box):
                raise ValueError(f"load box {box} does not fit shape {self.save.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's global shape."""
        return self.save.shape


def _guillotine(draw: st.DrawFn, box: Box, pieces: int) -> list[Box]:
    """Split ``box`` recursively along drawn dims/positions into at most ``pieces`` boxes."""
    splittable = [d for d in range(box.ndim) if box.sizes[d] >= 2]
    if pieces <= 1 or not splittable:
        return [box]
    dim = draw(st.sampled_from(splittable), label="split dim")
    cut = draw(st.integers(1, box.sizes[dim] - 1), label="split at")
    left_sizes = list(box.sizes)
    left_sizes[dim] = cut
    right_offsets = list(box.offsets)
    right_offsets[dim] += cut
    right_sizes = list(box.sizes)
    right_sizes[dim] -= cut
    left_pieces = draw(st.integers(1, pieces - 1), label="pieces left")
    return _guillotine(draw, Box(box.offsets, tuple(left_sizes)), left_pieces) + _guillotine(
        draw, Box(tuple(right_offsets), tuple(right_sizes)), pieces - left_pieces
    )


def _assign(draw: st.DrawFn, boxes: list[Box], ranks: int) -> tuple[tuple[Box, ...], ...]:
    owners = draw(st.lists(st.integers(0, ranks - 1), min_size=len(boxes), max_size=len(boxes)))
    return tuple(
        tuple(b for b, o in zip(boxes, owners, strict=True) if o == r) for r in range(ranks)
    )


def _uneven(draw: st.DrawFn, shape: tuple[int, ...], ranks: int) -> list[list[Box]]:
    dim = draw(st.integers(0, len(shape) - 1), label="uneven dim")
    cuts = sorted(
        draw(st.lists(st.integers(0, shape[dim]), min_size=ranks - 1, max_size=ranks - 1))
    )
    bounds = [0, *cuts, shape[dim]]
    result = []
    for start, stop in itertools.pairwise(bounds):
        offsets = [0] * len(shape)
        sizes = list(shape)
        # Empty pieces sit at the end of the dim as DTensor reports them: an empty
        # piece at a non-empty one's offsets would share its MetadataIndex.
        offsets[dim], sizes[dim] = (start, stop - start) if stop > start else (shape[dim], 0)
        result.append([Box(tuple(offsets), tuple(sizes))])
    return result


def _factor_pairs(n: int) -> list[tuple[int, int]]:
    return [(a, n // a) for a in range(1, n + 1) if n % a == 0]


def _free_empty_box(
    draw: st.DrawFn, shape: tuple[int, ...], taken: set[tuple[int, ...]]
) -> Box | None:
    """A zero-size box at offsets no other box uses (trailing or interior)."""
    dim = draw(st.integers(0, len(shape) - 1), label="empty dim")
    offsets = [draw(st.integers(0, side), label="empty offset") for side in shape]
    sizes = [
        min(draw(st.integers(0, 2)), side - off) for side, off in zip(shape, offsets, strict=True)
    ]
    sizes[dim] = 0
    box = Box(tuple(offsets), tuple(sizes))
    return None if box.offsets in taken else box


def _single(draw: st.DrawFn, shape: tuple[int, ...], ranks: int) -> RankBoxes:
    owner = draw(st.integers(0, ranks - 1), label="owner")
    return [[Box.full(shape)] if r == owner else [] for r in range(ranks)]


def _grid(draw: st.DrawFn, shape: tuple[int, ...], ranks: int) -> RankBoxes:
    rows, cols = draw(st.sampled_from(_factor_pairs(ranks)), label="grid")
    return fixed.grid(shape, rows, cols)


def _split(draw: st.DrawFn, shape: tuple[int, ...], ranks: int) -> tuple[list[Box], RankBoxes]:
    pieces = draw(st.integers(1, 6), label="pieces")
    split = _guillotine(draw, Box.full(shape), pieces)
    return split, [list(r) for r in _assign(draw, split, ranks)]


def _guillotined(draw: st.DrawFn, shape: tuple[int, ...], ranks: int) -> RankBoxes:
    return _split(draw, shape, ranks)[1]


def _with_empties(draw: st.DrawFn, shape: tuple[int, ...], ranks: int) -> RankBoxes:
    split, per_rank = _split(draw, shape, ranks)
    taken = {b.offsets for b in split}
    for _ in range(draw(st.integers(1, 2), label="empty boxes")):
        empty = _free_empty_box(draw, shape, taken)
        if empty is not None:
            taken.add(empty.offsets)
            per_rank[draw(st.integers(0, ranks - 1))].append(empty)
    return per_rank


def _partly_replicated(draw: st.DrawFn, shape: tuple[int, ...], ranks: int) -> RankBoxes:
    split, per_rank = _split(draw, shape, ranks)
    for box in split:
        extra = draw(st.integers(0, ranks - 1), label="replica on")
        if box not in per_rank[extra]:
            per_rank[extra].append(box)
    return per_rank


_RANKS = frozenset({"multi-rank"})
_CHUNKS = frozenset({"multi-chunk"})

#: The layout kinds, simplest first (``sampled_from`` shrinks toward the front).
_TABLE: tuple[LayoutKind, ...] = (
    LayoutKind("single", _single),
    LayoutKind("rows", lambda d, s, r: fixed.row_shards(s, r), _RANKS, min_dims=1),
    LayoutKind("cols", lambda d, s, r: fixed.col_shards(s, r), _RANKS, min_dims=1),
    LayoutKind("uneven", lambda d, s, r: _uneven(d, s, r), _RANKS, min_dims=1),
    LayoutKind("grid", _grid, _RANKS, min_dims=2),
    LayoutKind("guillotine", _guillotined, _CHUNKS, one_chunk=False),
    LayoutKind("empty", _with_empties, _CHUNKS, one_chunk=False, min_dims=1),
    LayoutKind(
        "replicated", lambda d, s, r: fixed.replicated(s, r), _RANKS, partition=False, min_ranks=2
    ),
    LayoutKind(
        "partly-replicated", _partly_replicated, _RANKS | _CHUNKS, partition=False, one_chunk=False
    ),
)
KINDS: dict[str, LayoutKind] = {kind.name: kind for kind in _TABLE}
LAYOUT_KINDS: tuple[str, ...] = tuple(KINDS)
"""Every kind :func:`layouts` can draw, simplest first."""
ONE_CHUNK_KINDS: tuple[str, ...] = tuple(k.name for k in _TABLE if k.one_chunk)
"""The kinds in which no rank holds more than one chunk."""


def kinds_within(capabilities: Collection[str]) -> tuple[str, ...]:
    """The kinds a backend claiming ``capabilities`` handles (``single`` always)."""
    return tuple(k.name for k in _TABLE if k.needs <= set(capabilities))


def kinds_needing(*capabilities: str) -> tuple[str, ...]:
    """The kinds that exercise exactly ``capabilities`` (to attempt them when unclaimed)."""
    return tuple(k.name for k in _TABLE if k.needs == set(capabilities))


@st.composite
def _layout(
    draw: st.DrawFn, shape: tuple[int, ...], ranks: int, kinds: tuple[str, ...]
) -> SaveLayout:
    usable = [k for k in kinds if KINDS[k].fits(shape, ranks)]
    kind = draw(st.sampled_from(usable), label="layout kind")
    event(f"layout {kind}")
    per_rank = KINDS[kind].draw(draw, shape, ranks)
    layout = SaveLayout(shape, tuple(tuple(r) for r in per_rank), kind)
    if layout.multi_chunk:
        event("several chunks on one rank")
    return layout


def layouts(
    shape: Sequence[int], *, ranks: int, kinds: Collection[str] | None = None
) -> st.SearchStrategy[SaveLayout]:
    """Save layouts of a tensor of ``shape`` over ``ranks`` ranks.

    ``kinds`` restricts the drawn :data:`LAYOUT_KINDS` (all by default; those
    that cannot apply to ``shape`` are skipped, ``single`` always can).
    Guillotine splits give arbitrary non-grid partitions and, assigned to
    ranks at random, several chunks of one tensor on one rank.
    """
    shape_t = tuple(check_int("shape side", s, 0) for s in shape)
    check_int("ranks", ranks, 1)
    chosen = LAYOUT_KINDS if kinds is None else tuple(k for k in LAYOUT_KINDS if k in set(kinds))
    unknown = set(kinds or ()) - set(LAYOUT_KINDS)
    if unknown or not chosen:
        raise ValueError(f"kinds must be a non-empty subset of {LAYOUT_KINDS}, got {kinds!r}")
    if not any(KINDS[k].fits(shape_t, ranks) for k in chosen):
        chosen = ("single", *chosen)
    return _layout(shape_t, ranks, chosen)


@st.composite
def _sub_box(draw: st.DrawFn, shape: tuple[int, ...]) -> Box:
    offsets, sizes = [], []
    for side in shape:
        start = draw(st.integers(0, side), label="sub-box start")
        offsets.append(start)
        sizes.append(draw(st.integers(0, side - start), label="sub-box size"))
    return Box(tuple(offsets), tuple(sizes))


@st.composite
def _reshard(
    draw: st.DrawFn,
    shape: tuple[int, ...],
    save_ranks: int,
    load_ranks: int,
    save_kinds: Collection[str] | None,
) -> ReshardCase:
    save = draw(layouts(shape, ranks=save_ranks, kinds=save_kinds), label="save layout")
    load_kind = draw(st.sampled_from(["full", "layout", "sub-boxes"]), label="load kind")
    event(f"load {load_kind}")
    boxes: tuple[tuple[Box, ...], ...]
    if load_kind == "full":
        boxes = tuple((Box.full(shape),) for _ in range(load_ranks))
    elif load_kind == "layout":
        boxes = draw(layouts(shape, ranks=load_ranks), label="load layout").boxes
    else:
        boxes = tuple(
            tuple(draw(st.lists(_sub_box(shape), min_size=1, max_size=3), label=f"rank {r} boxes"))
            for r in range(load_ranks)
        )
    return ReshardCase(save, boxes, load_kind)


def reshard_cases(
    shape: Sequence[int],
    *,
    save_ranks: int,
    load_ranks: int,
    save_kinds: Collection[str] | None = None,
) -> st.SearchStrategy[ReshardCase]:
    """A save layout over ``save_ranks`` and an independent load over ``load_ranks``.

    Loads are full tensors on every rank, another drawn layout, or arbitrary
    sub-boxes (possibly empty or overlapping: only they are read).
    """
    shape_t = tuple(check_int("shape side", s, 0) for s in shape)
    check_int("save_ranks", save_ranks, 1)
    check_int("load_ranks", load_ranks, 1)
    return _reshard(shape_t, save_ranks, load_ranks, save_kinds)
