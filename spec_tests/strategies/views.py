"""Every kind of tensor a state dict can hold, from ONE table of view kinds.

A state dict holds what a model holds: slices that start inside a larger storage, strided and
transposed views, permuted and ``channels_last`` activations, conjugated and negated complex or
float views (``x.conj()``, ``torch._neg_view``: torch keeps them lazy, as bits on the tensor),
broadcast views with stride 0, 0-d and empty tensors at a storage offset, and 3-D or higher
tensors cut on an inner dimension. Each :class:`ViewKind` makes, from a contiguous tensor, a
view with the *same values* and that memory layout; a backend must save the values, never the
storage behind them. :data:`SHARING` lists the ways several entries of one state dict share a
storage (tied and fused weights).

Properties try every kind by name in every run (:data:`VIEW_KINDS`, a deterministic loop) and
draw from the table too (:func:`views`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
from hypothesis import event
from hypothesis import strategies as st

from dcp_impl import dtypes as dt

__all__ = [
    "SHARING",
    "VIEWS",
    "VIEW_KINDS",
    "ViewKind",
    "kinds_for",
    "make_view",
    "resolved",
    "shared_entries",
    "views",
]

_PAD = 3  # elements before a view's first one: a storage offset no backend can mistake for 0


def _filled_like(shape: tuple[int, ...], dtype: torch.dtype, extra: int) -> torch.Tensor:
    """A flat buffer of ``prod(shape) + extra`` elements holding 0x5A bytes (never the values)."""
    numel = 1
    for side in shape:
        numel *= side
    buffer = torch.empty(numel + extra, dtype=dtype)
    buffer.view(torch.uint8).fill_(0x5A)
    return buffer


def _as_is(t: torch.Tensor) -> torch.Tensor:
    return t


def _storage_offset(t: torch.Tensor) -> torch.Tensor:
    buffer = _filled_like(tuple(t.shape), t.dtype, 2 * _PAD)
    view = buffer[_PAD : _PAD + t.numel()].view(t.shape)
    dt.copy_bits(view, t)
    return view


def _strided_slice(t: torch.Tensor) -> torch.Tensor:
    big = torch.empty((*t.shape[:-1], t.shape[-1] * 2 + 1), dtype=t.dtype)
    big.view(torch.uint8).fill_(0x5A)
    view = big[..., 1::2]
    dt.copy_bits(view, t)
    return view


def _permuted(order: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    def make(t: torch.Tensor) -> torch.Tensor:
        # Storage laid out in ``order``; the view permutes it back to t's dims.
        buffer = torch.empty(tuple(t.shape[d] for d in order), dtype=t.dtype)
        view = buffer.permute(*(order.index(d) for d in range(t.ndim)))
        dt.copy_bits(view, t)
        return view

    return make


def _transposed(t: torch.Tensor) -> torch.Tensor:
    return _permuted(tuple(reversed(range(t.ndim))))(t)


def _rotated(t: torch.Tensor) -> torch.Tensor:
    return _permuted((*range(1, t.ndim), 0))(t)


def _memory_format(fmt: torch.memory_format) -> Callable[[torch.Tensor], torch.Tensor]:
    def make(t: torch.Tensor) -> torch.Tensor:
        view = torch.empty_like(t, memory_format=fmt)
        dt.copy_bits(view, t)
        return view

    return make


def _inner_cut(t: torch.Tensor) -> torch.Tensor:
    # A slice of dim 1 of a larger tensor: rows of dim 0 are apart by more than they hold.
    big = torch.empty((t.shape[0], t.shape[1] + 2, *t.shape[2:]), dtype=t.dtype)
    big.view(torch.uint8).fill_(0x5A)
    view = big.narrow(1, 1, t.shape[1])
    dt.copy_bits(view, t)
    return view


def _broadcast(t: torch.Tensor) -> torch.Tensor:
    # Stride 0 along dim 0: the values become t's first row repeated (the view is the oracle).
    return t[:1].expand(t.shape) if t.shape[0] else t


def _conj(t: torch.Tensor) -> torch.Tensor:
    return t.conj_physical().conj()  # the conj bit set, the values unchanged


def _neg(t: torch.Tensor) -> torch.Tensor:
    return torch._neg_view(torch.neg(t))  # the neg bit set, the values unchanged


def _conj_neg(t: torch.Tensor) -> torch.Tensor:
    return torch._neg_view(torch.neg(t.conj_physical())).conj()


@functools.cache
def _works(kind: str, dtype: torch.dtype) -> bool:
    """Whether torch makes (and resolves) ``kind`` views of ``dtype`` with their lazy bits.

    The values are kept, but for NaN payloads where torch negates through a wider dtype
    (complex32, complex negation quiet signalling NaNs): the view itself is the oracle.
    """
    chosen = VIEWS[kind]
    probe = torch.zeros(2 * dt.by_torch(dtype).itemsize, dtype=torch.uint8).view(dtype)
    try:
        view = chosen.make(probe)
        view.resolve_conj().resolve_neg()
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return ("conj" not in chosen.needs or view.is_conj()) and (
        "neg" not in chosen.needs or view.is_neg()
    )  # reals have no conj bit: conj() is the tensor itself


@dataclass(frozen=True, slots=True)
class ViewKind:
    """One kind of view: how to make it from a contiguous tensor and where it applies."""

    name: str
    make: Callable[[torch.Tensor], torch.Tensor]
    min_dims: int = 0
    exact_dims: int | None = None
    needs: tuple[str, ...] = ()  # "conj" / "neg": dtypes torch can view so
    min_numel: int = 0
    only_empty: bool = False
    example_shape: tuple[int, ...] = (3, 4, 5)

    def fits(self, tensor: torch.Tensor) -> bool:
        """Whether this kind applies to ``tensor`` (its rank, size and dtype)."""
        if tensor.ndim < self.min_dims or tensor.numel() < self.min_numel:
            return False
        if self.only_empty and tensor.numel():
            return False
        if self.exact_dims is not None and tensor.ndim != self.exact_dims:
            return False
        return not self.needs or _works(self.name, tensor.dtype)


#: The view kinds, simplest first (``sampled_from`` shrinks toward the front).
_TABLE: tuple[ViewKind, ...] = (
    ViewKind("contiguous", _as_is),
    ViewKind("storage-offset", _storage_offset),
    ViewKind("zero-dim-at-offset", _storage_offset, exact_dims=0, example_shape=()),
    ViewKind("empty-at-offset", _storage_offset, only_empty=True, example_shape=(2, 0, 3)),
    ViewKind("strided-slice", _strided_slice, min_dims=1),
    ViewKind("transposed", _transposed, min_dims=2, example_shape=(5, 7)),
    ViewKind("permuted", _rotated, min_dims=3),
    ViewKind("inner-cut", _inner_cut, min_dims=3),
    ViewKind(
        "channels-last",
        _memory_format(torch.channels_last),
        exact_dims=4,
        example_shape=(2, 3, 4, 5),
    ),
    ViewKind(
        "channels-last-3d",
        _memory_format(torch.channels_last_3d),
        exact_dims=5,
        example_shape=(2, 3, 2, 2, 3),
    ),
    ViewKind("broadcast", _broadcast, min_dims=1, min_numel=1),
    ViewKind("conj", _conj, needs=("conj",)),
    ViewKind("neg", _neg, needs=("neg",)),
    ViewKind("conj-neg", _conj_neg, needs=("conj", "neg")),
)
VIEWS: dict[str, ViewKind] = {kind.name: kind for kind in _TABLE}
VIEW_KINDS: tuple[str, ...] = tuple(VIEWS)
"""Every view kind, simplest first."""


def kinds_for(tensor: torch.Tensor) -> tuple[str, ...]:
    """The kinds that apply to ``tensor``."""
    return tuple(k.name for k in _TABLE if k.fits(tensor))


def make_view(kind: str, tensor: torch.Tensor) -> torch.Tensor:
    """The ``kind`` view of the contiguous ``tensor`` (ValueError if it does not apply)."""
    chosen = VIEWS.get(kind)
    if chosen is None:
        raise ValueError(f"view kind {kind!r} is unknown: expected one of {VIEW_KINDS}")
    if not chosen.fits(tensor):
        raise ValueError(
            f"view kind {kind!r} does not apply to a {tensor.dtype} tensor of shape "
            f"{tuple(tensor.shape)}"
        )
    return chosen.make(tensor)


def resolved(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` with its conj and neg bits applied (the values a backend must store)."""
    return tensor.resolve_conj().resolve_neg()


def _labelled(kind: str, tensor: torch.Tensor) -> torch.Tensor:
    event(f"view {kind}")
    return make_view(kind, tensor)


def views(
    tensor: torch.Tensor, *, kinds: Collection[str] | None = None
) -> st.SearchStrategy[torch.Tensor]:
    """Views of ``tensor`` of every applicable kind (``kinds`` restricts them).

    Each holds ``tensor``'s values but ``broadcast``, which repeats its first row along dim 0
    (a stride-0 view); the view itself is the expected answer. The first option is the
    tensor itself, so a failure shrinks to a contiguous tensor when the view does not matter.
    """
    unknown = set(kinds or ()) - set(VIEW_KINDS)
    if unknown:
        raise ValueError(f"kinds must be a subset of {VIEW_KINDS}, got {sorted(unknown)}")
    usable = [k for k in kinds_for(tensor) if kinds is None or k in kinds] or ["contiguous"]
    return st.sampled_from(usable).map(lambda kind: _labelled(kind, tensor))


def _tied(base: torch.Tensor) -> dict[str, torch.Tensor]:
    # One tensor object under two names (embedding and output projection).
    return {"embed.weight": base, "lm_head.weight": base}


def _fused(base: torch.Tensor) -> dict[str, torch.Tensor]:
    # q, k, v as consecutive slices of one fused projection (offsets 0, n, 2n).
    qkv = torch.empty((3, *base.shape), dtype=base.dtype)
    flipped = torch.flip(base.view(torch.uint8), [0]).view(base.dtype)  # any dtype
    for k, part in enumerate((base, flipped, base)):
        dt.copy_bits(qkv[k], part)
    return {"attn.q": qkv[0], "attn.k": qkv[1], "attn.v": qkv[2], "attn.qkv": qkv}


def _overlapping(base: torch.Tensor) -> dict[str, torch.Tensor]:
    # Two windows of one buffer that overlap, and the buffer's transpose.
    flat = base.reshape(-1)
    half = flat.numel() // 2
    return {"window.a": flat[: half + 1], "window.b": flat[half - 1 :], "window.t": base.t()}


#: Ways entries of one state dict share a storage: name -> builder from a 2-D tensor.
SHARING: dict[str, Callable[[torch.Tensor], dict[str, torch.Tensor]]] = {
    "tied": _tied,
    "fused": _fused,
    "overlapping": _overlapping,
}


def shared_entries(kind: str, base: torch.Tensor) -> dict[str, torch.Tensor]:
    """The entries of the :data:`SHARING` ``kind``, built over the 2-D tensor ``base``."""
    if base.ndim != 2 or base.shape[0] < 2:
        raise ValueError(f"shared_entries needs a 2-D tensor of >= 2 rows, got {base.shape}")
    return SHARING[kind](base)
