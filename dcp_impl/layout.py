"""Chunk geometry: boxes of N-d tensors, overlap and coverage checks, read planning.

A :class:`Box` is a region of a row-major tensor given by per-dimension ``offsets`` and
``sizes`` (DCP's ``ChunkStorageMetadata``). A 0-dim tensor is ``Box((), ())``: it has no
dimensions and exactly one element. A box with a zero size in any dimension holds no
elements and never overlaps anything.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from dcp_impl.errors import LayoutMismatchError

__all__ = [
    "Box",
    "Copy",
    "byte_span",
    "first_overlap",
    "holes",
    "intersect",
    "out_of_bounds",
    "overlaps",
    "plan_reads",
    "tiles",
    "work_limit",
]


class _ChunkLike(Protocol):
    @property
    def offsets(self) -> Sequence[int]: ...

    @property
    def sizes(self) -> Sequence[int]: ...


@dataclass(frozen=True, slots=True)
class Box:
    """A region of a row-major N-d tensor: ``offsets[d] <= i[d] < offsets[d] + sizes[d]``."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.offsets) != len(self.sizes):
            raise ValueError(f"box offsets {self.offsets} and sizes {self.sizes} differ in length")
        if any(v < 0 for v in (*self.offsets, *self.sizes)):
            raise ValueError(f"box offsets {self.offsets} / sizes {self.sizes} must be >= 0")

    @classmethod
    def full(cls, shape: Sequence[int]) -> Box:
        """The box covering a whole tensor of ``shape``."""
        return cls((0,) * len(shape), tuple(shape))

    @classmethod
    def of(cls, chunk: _ChunkLike) -> Box:
        """The box of anything with ``offsets`` and ``sizes`` (e.g. ChunkStorageMetadata)."""
        return cls(tuple(chunk.offsets), tuple(chunk.sizes))

    @property
    def ndim(self) -> int:
        return len(self.sizes)

    @property
    def numel(self) -> int:
        return math.prod(self.sizes)

    @property
    def is_empty(self) -> bool:
        return self.numel == 0

    @property
    def ends(self) -> tuple[int, ...]:
        """Exclusive upper corner."""
        return tuple(o + s for o, s in zip(self.offsets, self.sizes, strict=True))

    def contains(self, other: Box) -> bool:
        """Whether every element of ``other`` lies in this box (empty boxes fit anywhere)."""
        _same_ndim(self, other)
        if other.is_empty:
            return True
        return all(
            so <= oo and oe <= se
            for so, se, oo, oe in zip(
                self.offsets, self.ends, other.offsets, other.ends, strict=True
            )
        )

    def relative_to(self, outer: Box) -> Box:
        """This box in ``outer``'s frame (offsets measured from ``outer.offsets``)."""
        _same_ndim(self, outer)
        return Box(
            tuple(o - base for o, base in zip(self.offsets, outer.offsets, strict=True)),
            self.sizes,
        )


@dataclass(frozen=True, slots=True)
class Copy:
    """One rectangular copy from a saved chunk into the requested box."""

    source: int
    """Index of the saved chunk in the sequence given to :func:`plan_reads`."""
    source_offsets: tuple[int, ...]
    """Where the copy starts, relative to the saved chunk."""
    dest_offsets: tuple[int, ...]
    """Where the copy lands, relative to the requested box."""
    lengths: tuple[int, ...]


def _same_ndim(a: Box, b: Box) -> None:
    if a.ndim != b.ndim:
        raise LayoutMismatchError(f"boxes differ in rank: {a} has {a.ndim} dims, {b} has {b.ndim}")


def intersect(a: Box, b: Box) -> Box | None:
    """The common region of two boxes, or None when it holds no element."""
    _same_ndim(a, b)
    lo = tuple(max(x, y) for x, y in zip(a.offsets, b.offsets, strict=True))
    hi = tuple(min(x, y) for x, y in zip(a.ends, b.ends, strict=True))
    if a.is_empty or b.is_empty or any(h <= low for low, h in zip(lo, hi, strict=True)):
        return None
    return Box(lo, tuple(h - low for low, h in zip(lo, hi, strict=True)))


def overlaps(a: Box, b: Box) -> bool:
    """Whether two boxes share an element; zero-size boxes never overlap anything."""
    return intersect(a, b) is not None


def first_overlap(boxes: Sequence[Box]) -> tuple[int, int] | None:
    """Indices ``(i, j)``, ``i < j``, of the first overlapping pair, or None.

    Costs O(n log n) per dimension for every layout DCP saves (grids, and any partition made
    by straight cuts): the boxes are split into groups no straight cut separates, and only
    boxes within one such group are compared. A layout that would take more than
    :func:`work_limit` steps raises :class:`LayoutMismatchError`, unless an overlapping pair
    was found by then (it is returned; where very many pairs overlap, not always the first).
    """
    live = [i for i, b in enumerate(boxes) if not b.is_empty]
    if not live or boxes[live[0]].ndim == 0:
        return (live[0], live[1]) if len(live) > 1 else None
    budget = _Budget(work_limit(len(live), boxes[live[0]].ndim))
    found: list[tuple[int, int]] = []
    try:
        for group in _uncut_groups(boxes, live, budget):
            _overlapping_pairs(boxes, group, budget, found)
    except _OutOfBudget:
        if not found:
            raise LayoutMismatchError(
                f"{len(live)} chunks of {boxes[live[0]].ndim} dims: expected a layout whose "
                f"overlap check takes at most {budget.limit} steps, found one that takes more "
                "(chunks no straight cut separates)"
            ) from None
    return min(found, default=None)


def tiles(shape: Sequence[int], boxes: Sequence[Box]) -> bool | None:
    """Whether ``boxes`` (each inside a tensor of ``shape``) cover it exactly once, in
    O(n 2^k) for boxes that differ in k dimensions; None where k is too large to tell so.

    Boxes inside a region cover it exactly once if and only if their volumes add up to its
    volume and the corners that an odd number of boxes share are the region's corners: the
    corner parities fix, modulo 2, how often each element is covered (each is covered an
    odd number of times, so at least once), and the volumes then allow exactly once.
    """
    live = [b for b in boxes if not b.is_empty]
    full = Box.full(shape)
    if sum(b.numel for b in live) != full.numel:
        return False
    if full.is_empty:
        return True  # nothing to cover, and no box holds an element
    # Dimensions every box spans whole change no corner's parity: leave them out.
    dims = [d for d in range(full.ndim) if any(b.sizes[d] != full.sizes[d] for b in live)]
    if len(dims) > _MAX_CORNER_DIMS:
        return None
    odd: set[tuple[int, ...]] = set()
    for box in [*live, full]:  # the region's own corners cancel those of an exact tiling
        for corner in itertools.product(*[(box.offsets[d], box.ends[d]) for d in dims]):
            odd.symmetric_difference_update((corner,))
    return not odd


_MAX_CORNER_DIMS = 6
"""Most dimensions :func:`tiles` takes corners in (2**6 per box)."""


def work_limit(count: int, ndim: int) -> int:
    """Steps :func:`first_overlap` and :func:`holes` may take for ``count`` boxes of ``ndim``
    dims: O(n log n) per dimension, and never less than a million."""
    return (1 << 20) + 4 * count * (ndim + 2) * count.bit_length()


class _OutOfBudget(Exception):
    """A layout check used up its work budget."""


class _Budget:
    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = self.left = limit

    def spend(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise _OutOfBudget


def _uncut_groups(boxes: Sequence[Box], live: list[int], budget: _Budget) -> Iterator[list[int]]:
    """Groups of ``live`` that no straight cut separates, such that boxes of different
    groups never overlap: cut along every dimension in turn while a cut splits something."""
    ndim = boxes[live[0]].ndim
    pending = [(live, ndim)]  # a group and the dimension that cut it last (ndim: none)
    while pending:
        group, last = pending.pop()
        for d in range(ndim):
            if d == last or len(group) < 2:
                continue
            parts = _cut(boxes, group, d, budget)
            if len(parts) > 1:
                pending += [(part, d) for part in parts if len(part) > 1]
                break
        else:
            if len(group) > 1:
                yield group


def _cut(boxes: Sequence[Box], group: list[int], d: int, budget: _Budget) -> list[list[int]]:
    """``group`` split where no box spans a point of dimension ``d`` (its interval graph's
    connected components)."""
    budget.spend(len(group))
    ordered = sorted(group, key=lambda i: boxes[i].offsets[d])
    parts: list[list[int]] = []
    end = -1
    for i in ordered:
        box = boxes[i]
        start = box.offsets[d]
        if start >= end:
            parts.append([])
        parts[-1].append(i)
        end = max(end, start + box.sizes[d])
    return parts


def _overlapping_pairs(
    boxes: Sequence[Box], group: list[int], budget: _Budget, found: list[tuple[int, int]]
) -> None:
    """Add every overlapping pair of ``group`` to ``found``, by a sweep along its most varied
    dimension."""
    ndim = boxes[group[0]].ndim
    d = max(range(ndim), key=lambda k: len({boxes[i].offsets[k] for i in group}))
    budget.spend(len(group) * ndim)
    ordered = sorted(group, key=lambda i: boxes[i].offsets[d])
    for pos, i in enumerate(ordered):
        end = boxes[i].ends[d]
        for k in range(pos + 1, len(ordered)):  # by index: slicing would copy the tail
            j = ordered[k]
            if boxes[j].offsets[d] >= end:
                break
            budget.spend(1)
            if overlaps(boxes[i], boxes[j]):
                found.append((min(i, j), max(i, j)))


def out_of_bounds(shape: Sequence[int], box: Box) -> bool:
    """Whether ``box`` reaches outside a tensor of ``shape`` (or has another rank)."""
    if box.ndim != len(shape):
        return True
    if box.is_empty:
        # An empty chunk still names a position; it may sit at the end of a dimension.
        return any(o > n for o, n in zip(box.offsets, shape, strict=True))
    return any(e > n for e, n in zip(box.ends, shape, strict=True))


def _subtract(region: Box, cut: Box) -> Iterator[Box]:
    """``region`` minus ``cut`` (which lies inside it) as at most 2*ndim disjoint boxes."""
    offsets, sizes = list(region.offsets), list(region.sizes)

    def slab(d: int, start: int, stop: int) -> Box:
        return Box(
            (*offsets[:d], start, *offsets[d + 1 :]), (*sizes[:d], stop - start, *sizes[d + 1 :])
        )

    # Peel off the slabs below and above the cut one dimension at a time,
    # then narrow the remaining region to the cut in that dimension.
    for d in range(region.ndim):
        lo, hi, end = cut.offsets[d], cut.ends[d], offsets[d] + sizes[d]
        if lo > offsets[d]:
            yield slab(d, offsets[d], lo)
        if hi < end:
            yield slab(d, hi, end)
        offsets[d], sizes[d] = lo, hi - lo


def _cover(
    saved: Sequence[Box], request: Box, budget: _Budget | None = None
) -> tuple[list[tuple[int, Box]], list[Box]]:
    """Assign each element of ``request`` to the first saved box holding it.

    Returns the (saved index, piece) assignments and the pieces no box holds.
    """
    pending = [] if request.is_empty else [request]
    taken: list[tuple[int, Box]] = []
    for index, box in enumerate(saved):
        if not pending:
            break
        if budget is not None:
            budget.spend(len(pending))
        rest: list[Box] = []
        for region in pending:
            common = intersect(region, box)
            if common is None:
                rest.append(region)
            else:
                taken.append((index, common))
                rest.extend(_subtract(region, common))
        pending = rest
    return taken, pending


def holes(shape: Sequence[int], boxes: Sequence[Box]) -> list[Box]:
    """The parts of a tensor of ``shape`` that no box covers, as disjoint boxes.

    Raises :class:`LayoutMismatchError` where listing them would take more than
    :func:`work_limit` steps (very many holes among very many boxes).
    """
    full = Box.full(shape)
    inside = [b for b in boxes if not b.is_empty and full.contains(b)]
    # Disjoint boxes inside the tensor whose volumes add up to it cover it:
    # the common case (a partition) needs no box subtraction at all.
    volume = sum(b.numel for b in inside)
    if volume == full.numel and first_overlap(inside) is None:
        return []
    budget = _Budget(work_limit(len(boxes), len(shape)))
    try:
        return _cover(boxes, full, budget)[1]
    except _OutOfBudget:
        raise LayoutMismatchError(
            f"{len(boxes)} chunks of a tensor of shape {tuple(shape)}: expected holes that "
            f"can be listed in {budget.limit} steps, found more (the chunks' volumes add up "
            f"to {volume} of {full.numel} elements)"
        ) from None


def plan_reads(saved: Sequence[Box], request: Box) -> list[Copy]:
    """Plan the copies that fill ``request`` from ``saved`` chunks, each element exactly once.

    Where saved chunks overlap (replicated data), the earlier chunk wins.
    Raises :class:`LayoutMismatchError` listing what no saved chunk covers.
    """
    taken, missing = _cover(saved, request)
    if missing:
        shown = ", ".join(f"offsets={m.offsets} sizes={m.sizes}" for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise LayoutMismatchError(
            f"requested region offsets={request.offsets} sizes={request.sizes} is not covered "
            f"by the saved chunks: expected full coverage, found holes at {shown}{more}"
        )
    return [
        Copy(
            source=index,
            source_offsets=piece.relative_to(saved[index]).offsets,
            dest_offsets=piece.relative_to(request).offsets,
            lengths=piece.sizes,
        )
        for index, piece in taken
    ]


def byte_span(chunk_sizes: Sequence[int], sub: Box, itemsize: int) -> tuple[int, int, bool]:
    """The smallest contiguous byte range of a row-major chunk that holds ``sub``.

    ``sub`` is given in the chunk's own frame. Returns ``(start, length, exact)`` where
    ``exact`` means the range holds nothing but ``sub``'s elements, in order, so it can be
    read straight into a contiguous destination.
    """
    # Called for every read target: one pass over the dims, no intermediate boxes.
    fits = len(chunk_sizes) == sub.ndim and all(
        o + s <= n for o, s, n in zip(sub.offsets, sub.sizes, chunk_sizes, strict=True)
    )
    if not fits and not Box.full(chunk_sizes).contains(sub):  # empty sub-boxes fit anywhere
        raise LayoutMismatchError(f"sub-box {sub} is outside a chunk of sizes {tuple(chunk_sizes)}")
    numel = sub.numel
    if numel == 0:
        return 0, 0, True
    first = last = 0
    stride = 1
    for d in range(len(chunk_sizes) - 1, -1, -1):
        first += sub.offsets[d] * stride
        last += (sub.offsets[d] + sub.sizes[d] - 1) * stride
        stride *= chunk_sizes[d]
    count = last - first + 1
    return first * itemsize, count * itemsize, count == numel
