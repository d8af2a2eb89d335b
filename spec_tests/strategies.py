"""Hypothesis strategies for the DCP conformance suite.

House style (hypothesis ``guides/api-style.rst``): arguments are keyword-only
and validated eagerly, dependent strategies take concrete values (draw the
shape first, then ``layouts(shape, ranks=...)``), everything shrinks toward
one chunk, one rank and small shapes, and each record carries its own
expected answer (a :class:`SaveLayout` knows which boxes it covers; a
:class:`ReshardCase` knows both layouts).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.vendor.pretty import RepresentationPrinter, for_type_by_name

from dcp_impl import dtypes as dt
from dcp_impl.layout import Box, first_overlap, holes, out_of_bounds
from spec_tests import layouts as fixed

__all__ = [
    "LAYOUT_KINDS",
    "ReshardCase",
    "SaveLayout",
    "dtypes",
    "layouts",
    "names",
    "noncontiguous",
    "reshard_cases",
    "shapes",
    "state_dicts",
    "tensor_values",
]

# Kinds whose boxes partition the tensor: every element is held exactly once.
_PARTITIONS = frozenset({"single", "rows", "cols", "uneven", "grid", "guillotine", "empty"})
# Every kind `layouts` can draw, simplest first (sampled_from shrinks to the front).
LAYOUT_KINDS: tuple[str, ...] = (
    "single",
    "rows",
    "cols",
    "uneven",
    "grid",
    "guillotine",
    "empty",
    "replicated",
    "partly-replicated",
)
_PER_ELEMENT_LIMIT = 64  # above this many elements, values come from a drawn seed
_BOOL = torch.bool


def _pretty_tensor(tensor: torch.Tensor, printer: RepresentationPrinter, cycle: bool) -> None:
    # torch's repr cannot print bits*/float4 values, and the raw bytes are what a
    # bit-exact comparison needs to show anyway.
    head = bytes(_leading_bytes(tensor, 32)).hex()
    printer.text(
        f"tensor(dtype={tensor.dtype}, shape={tuple(tensor.shape)}, stride={tensor.stride()}, "
        f"bytes={head}{'...' if tensor.numel() * tensor.element_size() > 32 else ''})"
    )


def _leading_bytes(tensor: torch.Tensor, limit: int) -> list[int]:
    if tensor.numel() == 0:
        return []
    dense = dt.dense(tensor)
    return dense.reshape(-1).view(torch.uint8)[:limit].tolist()


for_type_by_name("torch", "Tensor", _pretty_tensor)


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
        if self.kind not in LAYOUT_KINDS:
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
        return self.kind in _PARTITIONS

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


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return value


def _row(dtype: dt.DtypeInfo | torch.dtype | str) -> dt.DtypeInfo:
    if isinstance(dtype, dt.DtypeInfo):
        return dtype
    if isinstance(dtype, str):
        return dt.by_name(dtype)
    return dt.by_torch(dtype)


def dtypes(
    *, allowed: Iterable[dt.DtypeInfo | torch.dtype | str] | None = None
) -> st.SearchStrategy[dt.DtypeInfo]:
    """Rows of the dtype table (all of them by default), shrinking toward the first."""
    rows = dt.DTYPES if allowed is None else tuple(_row(d) for d in allowed)
    if not rows:
        raise ValueError("dtypes(allowed=...) needs at least one dtype")
    order = {row.name: i for i, row in enumerate(dt.DTYPES)}
    # uint8 first: the simplest dtype to read in a shrunk failure.
    ranked = sorted(set(rows), key=lambda r: (r.name != "uint8", order[r.name]))
    return st.sampled_from(ranked).map(_labelled_dtype)


def _labelled_dtype(row: dt.DtypeInfo) -> dt.DtypeInfo:
    event(f"dtype {row.name}")
    return row


def shapes(
    *, min_dims: int = 0, max_dims: int = 4, max_side: int = 6, max_elements: int = 4096
) -> st.SearchStrategy[tuple[int, ...]]:
    """Tensor shapes incl. 0-dim and zero-size dims, shrinking toward ``min_dims`` ones."""
    _check_int("min_dims", min_dims, 0)
    _check_int("max_dims", max_dims, min_dims)
    _check_int("max_side", max_side, 0)
    _check_int("max_elements", max_elements, 1)
    sides = st.lists(st.integers(0, max_side), min_size=min_dims, max_size=max_dims).filter(
        lambda s: math.prod(s) <= max_elements
    )
    return sides.map(_labelled_shape)


def _labelled_shape(sides: list[int]) -> tuple[int, ...]:
    shape = tuple(sides)
    event(f"ndim {len(shape)}")
    if 0 in shape:
        event("zero-size dim")
    return shape


def _special_patterns(row: dt.DtypeInfo) -> list[bytes]:
    """Bit patterns worth trying for ``row``: zero, extremes, -0.0, inf, NaNs with payloads."""
    n = row.itemsize
    if row.torch_dtype is _BOOL:
        return [b"\x00", b"\x01"]
    sign = b"\x00" * (n - 1) + b"\x80"  # -0.0 for floats, the minimum for signed ints
    patterns = [
        b"\x00" * n,
        b"\xff" * n,
        sign,
        b"\xff" * (n - 1) + b"\x7f",
        b"\x01" + b"\x00" * (n - 1),
    ]
    if row.torch_dtype.is_floating_point:
        probe = torch.tensor(
            [math.inf, -math.inf, math.nan, 1e300, -1e300, 1e-300, 1.0], dtype=torch.float64
        )
        try:
            raw = probe.to(row.torch_dtype).view(torch.uint8).tolist()
        except (RuntimeError, NotImplementedError):
            raw = []  # float4 and friends have no conversion; random bits cover them
        patterns += [bytes(raw[i : i + n]) for i in range(0, len(raw), n)]
    return list(dict.fromkeys(patterns))


def _from_bytes(data: bytes | bytearray, row: dt.DtypeInfo, shape: tuple[int, ...]) -> torch.Tensor:
    flat = (
        torch.frombuffer(bytearray(data), dtype=torch.uint8)
        if data
        else torch.empty(0, dtype=torch.uint8)
    )
    return flat.view(row.torch_dtype).reshape(shape)


@st.composite
def _values(draw: st.DrawFn, row: dt.DtypeInfo, shape: tuple[int, ...]) -> torch.Tensor:
    numel = math.prod(shape)
    specials = _special_patterns(row)
    if row.torch_dtype is _BOOL:
        element: st.SearchStrategy[bytes] = st.sampled_from(specials)
    else:
        element = st.one_of(
            st.sampled_from(specials), st.binary(min_size=row.itemsize, max_size=row.itemsize)
        )
    if numel <= _PER_ELEMENT_LIMIT:
        return _from_bytes(
            b"".join(draw(st.lists(element, min_size=numel, max_size=numel))), row, shape
        )
    event("values from a seed")
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1), label="value seed"))
    data = torch.randint(0, 256, (numel * row.itemsize,), dtype=torch.uint8, generator=gen)
    if row.torch_dtype is _BOOL:
        data &= 1
    # Scatter the special patterns so large tensors hold them too.
    for pos in draw(st.lists(st.integers(0, numel - 1), max_size=8), label="special positions"):
        pattern = draw(st.sampled_from(specials))
        data[pos * row.itemsize : (pos + 1) * row.itemsize] = torch.tensor(
            list(pattern), dtype=torch.uint8
        )
    return data.view(row.torch_dtype).reshape(shape)


def tensor_values(
    dtype: dt.DtypeInfo | torch.dtype | str, shape: Sequence[int]
) -> st.SearchStrategy[torch.Tensor]:
    """Contiguous CPU tensors of ``dtype`` and ``shape`` built from raw bit patterns.

    Every dtype of the table works (float8, bits, complex32, float4 included)
    because values are written as bytes and viewed, never converted. Small
    tensors draw each element (shrinking to zeros); large ones draw a seed.
    """
    row = _row(dtype)
    shape_t = tuple(_check_int("shape side", s, 0) for s in shape)
    return _values(row, shape_t)


_NAME_ALPHABET = st.one_of(
    st.sampled_from("abcxyz_019"),
    st.sampled_from(". /-:é日ßΩ🙂"),
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Co", "Cn")),
)


#: Names a storage format may reserve for itself (safetensors' header key). Hypothesis
#: draws string literals it finds in the code under test, so :func:`names` leaves these
#: out explicitly; ``test_reserved_names`` checks each of them on its own terms.
RESERVED_NAMES = frozenset({"__metadata__"})


def names(*, max_size: int = 12) -> st.SearchStrategy[str]:
    """Entry names with dots, unicode, spaces and slashes, shrinking toward ``"a"``.

    Never one of :data:`RESERVED_NAMES`.
    """
    _check_int("max_size", max_size, 1)
    return st.text(_NAME_ALPHABET, min_size=1, max_size=max_size).filter(
        lambda name: name not in RESERVED_NAMES
    )


def noncontiguous(tensor: torch.Tensor) -> st.SearchStrategy[torch.Tensor]:
    """Views equal to ``tensor`` that are not plain contiguous tensors.

    Transposed storage, strided slices of a larger buffer and channels_last
    (4-dim); the first option is the tensor itself, so this shrinks away.
    """
    options: list[Callable[[torch.Tensor], torch.Tensor]] = [_as_is]
    if tensor.ndim >= 2:
        options.append(_transposed_storage)
    if tensor.ndim >= 1:
        options.append(_strided_slice)
    if tensor.ndim == 4:
        options.append(_channels_last)
    return st.sampled_from(options).map(lambda make: make(tensor))


def _as_is(t: torch.Tensor) -> torch.Tensor:
    return t


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    event("channels_last view")
    view = torch.empty_like(t, memory_format=torch.channels_last)
    dt.copy_bits(view, t)
    return view


def _transposed_storage(t: torch.Tensor) -> torch.Tensor:
    event("transposed view")
    buffer = torch.empty(tuple(reversed(t.shape)), dtype=t.dtype)
    view = buffer.permute(*reversed(range(t.ndim)))
    dt.copy_bits(view, t)
    return view


def _strided_slice(t: torch.Tensor) -> torch.Tensor:
    event("strided slice")
    big = torch.empty((*t.shape[:-1], t.shape[-1] * 2 + 1), dtype=t.dtype)
    big.view(torch.uint8).fill_(0x5A)
    view = big[..., 1::2]
    dt.copy_bits(view, t)
    return view


@st.composite
def _state_dict(
    draw: st.DrawFn, allowed: tuple[dt.DtypeInfo, ...], max_entries: int, allow_bytes: bool
) -> dict[str, Any]:
    count = draw(st.integers(1, max_entries), label="entries")
    paths = draw(
        st.lists(
            st.lists(names(max_size=6), min_size=1, max_size=2).map(tuple),
            min_size=count,
            max_size=count,
            unique_by=lambda p: ".".join(p),
        ),
        label="paths",
    )
    result: dict[str, Any] = {}
    for path in paths:
        leaf = _leaf(draw, allowed, allow_bytes)
        _insert(result, path, leaf)
    if not result:  # every path collided with an earlier one
        result["a"] = _leaf(draw, allowed, allow_bytes)
    return result


def _leaf(draw: st.DrawFn, allowed: tuple[dt.DtypeInfo, ...], allow_bytes: bool) -> Any:
    if allow_bytes and draw(st.booleans(), label="non-tensor entry"):
        event("non-tensor entry")
        return draw(
            st.one_of(
                st.integers(-(2**70), 2**70),
                st.text(max_size=8),
                st.lists(st.integers(), max_size=3),
                st.binary(max_size=16),
            ),
            label="object",
        )
    row = draw(dtypes(allowed=allowed))
    shape = draw(shapes(max_dims=3, max_side=5))
    value = draw(tensor_values(row, shape))
    return draw(noncontiguous(value))


def _insert(tree: dict[str, Any], path: tuple[str, ...], leaf: Any) -> None:
    """Place ``leaf`` at ``path``; skip it if the path clashes with what is there."""
    node = tree
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            return
        node = child
    if path[-1] not in node:
        node[path[-1]] = leaf


def state_dicts(
    *,
    allowed: Iterable[dt.DtypeInfo | torch.dtype | str] | None = None,
    max_entries: int = 4,
    allow_bytes: bool = True,
) -> st.SearchStrategy[dict[str, Any]]:
    """Nested state dicts of tensors (possibly non-contiguous views) and plain objects.

    Non-tensor leaves (ints, strings, lists, bytes) are what DCP stores as
    BytesIO; ``allow_bytes=False`` leaves them out. Flattened names
    (``"outer.inner"``) never collide.
    """
    rows = dt.DTYPES if allowed is None else tuple(_row(d) for d in allowed)
    _check_int("max_entries", max_entries, 1)
    return _state_dict(tuple(rows), max_entries, allow_bytes)


# ---------------------------------------------------------------- layouts


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


@st.composite
def _layout(
    draw: st.DrawFn, shape: tuple[int, ...], ranks: int, kinds: tuple[str, ...]
) -> SaveLayout:
    usable = [k for k in kinds if _kind_fits(k, shape, ranks)]
    kind = draw(st.sampled_from(usable), label="layout kind")
    event(f"layout {kind}")
    full = Box.full(shape)
    per_rank: list[list[Box]]
    if kind == "single":
        owner = draw(st.integers(0, ranks - 1), label="owner")
        per_rank = [[full] if r == owner else [] for r in range(ranks)]
    elif kind == "rows":
        per_rank = fixed.row_shards(shape, ranks)
    elif kind == "cols":
        per_rank = fixed.col_shards(shape, ranks)
    elif kind == "uneven":
        per_rank = _uneven(draw, shape, ranks)
    elif kind == "grid":
        rows, cols = draw(st.sampled_from(_factor_pairs(ranks)), label="grid")
        per_rank = fixed.grid(shape, rows, cols)
    elif kind == "replicated":
        per_rank = fixed.replicated(shape, ranks)
    else:
        pieces = draw(st.integers(1, 6), label="pieces")
        split = _guillotine(draw, full, pieces)
        per_rank = [list(r) for r in _assign(draw, split, ranks)]
        if kind == "partly-replicated":
            for box in split:
                extra = draw(st.integers(0, ranks - 1), label="replica on")
                if box not in per_rank[extra]:
                    per_rank[extra].append(box)
        elif kind == "empty":
            taken = {b.offsets for b in split}
            for _ in range(draw(st.integers(1, 2), label="empty boxes")):
                empty = _free_empty_box(draw, shape, taken)
                if empty is not None:
                    taken.add(empty.offsets)
                    per_rank[draw(st.integers(0, ranks - 1))].append(empty)
    layout = SaveLayout(shape, tuple(tuple(r) for r in per_rank), kind)
    if layout.multi_chunk:
        event("several chunks on one rank")
    return layout


def _kind_fits(kind: str, shape: tuple[int, ...], ranks: int) -> bool:
    if kind in {"rows", "cols", "uneven", "empty"}:
        return len(shape) >= 1
    if kind == "grid":
        return len(shape) >= 2
    if kind == "replicated":
        return ranks >= 2
    return True


def layouts(
    shape: Sequence[int], *, ranks: int, kinds: Collection[str] | None = None
) -> st.SearchStrategy[SaveLayout]:
    """Save layouts of a tensor of ``shape`` over ``ranks`` ranks.

    ``kinds`` restricts the drawn :data:`LAYOUT_KINDS` (all by default; those
    that cannot apply to ``shape`` are skipped, ``single`` always can).
    Guillotine splits give arbitrary non-grid partitions and, assigned to
    ranks at random, several chunks of one tensor on one rank.
    """
    shape_t = tuple(_check_int("shape side", s, 0) for s in shape)
    _check_int("ranks", ranks, 1)
    chosen = LAYOUT_KINDS if kinds is None else tuple(k for k in LAYOUT_KINDS if k in set(kinds))
    unknown = set(kinds or ()) - set(LAYOUT_KINDS)
    if unknown or not chosen:
        raise ValueError(f"kinds must be a non-empty subset of {LAYOUT_KINDS}, got {kinds!r}")
    if not any(_kind_fits(k, shape_t, ranks) for k in chosen):
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
    shape_t = tuple(_check_int("shape side", s, 0) for s in shape)
    _check_int("save_ranks", save_ranks, 1)
    _check_int("load_ranks", load_ranks, 1)
    return _reshard(shape_t, save_ranks, load_ranks, save_kinds)
