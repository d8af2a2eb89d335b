"""Strategies for state dicts: nested dicts of tensors (any view kind) and plain objects.

Sizes follow real state dicts: mostly a handful of entries, now and then hundreds. The first
:data:`DRAWN_ENTRIES` entries are drawn one by one (each shrinks on its own); any beyond them
come from one drawn seed through :func:`bulk_entries` (hypothesis' buffer could not hold
hundreds of drawn tensors), so the entry count shrinks toward small like any other draw.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from hypothesis import event
from hypothesis import strategies as st
from torch.distributed.checkpoint._nested_dict import flatten_state_dict

from dcp_impl import dtypes as dt
from spec_tests.strategies.tensors import (
    check_int,
    dtypes,
    names,
    noncontiguous,
    row_of,
    shapes,
    tensor_values,
)
from spec_tests.strategies.views import SHARING, kinds_for, make_view, shared_entries

__all__ = ["DRAWN_ENTRIES", "bulk_entries", "entry_counts", "state_dicts"]

#: Entries drawn one by one; the rest of a larger state dict comes from a drawn seed.
DRAWN_ENTRIES = 8


def entry_counts(max_entries: int, min_entries: int = 1) -> st.SearchStrategy[int]:
    """Counts in ``[min_entries, max_entries]``: a power-of-two scale first, then a count
    within it.

    Every scale is as likely as any other, so a few examples of a run reach hundreds while
    most stay small, and a failure shrinks toward ``min_entries``.
    """
    check_int("min_entries", min_entries, 1)
    check_int("max_entries", max_entries, min_entries)
    top = math.ceil(math.log2(max_entries)) if max_entries > 1 else 0

    def within(scale: int) -> st.SearchStrategy[int]:
        high = min(max_entries, 1 << scale)
        return st.integers(min_entries, high) if high > min_entries else st.just(min_entries)

    return st.integers(0, top).flatmap(within)


@st.composite
def _state_dict(
    draw: st.DrawFn,
    allowed: tuple[dt.DtypeInfo, ...],
    entries: tuple[int, int],
    allow_bytes: bool,
) -> dict[str, Any]:
    count = draw(entry_counts(entries[1], entries[0]), label="entries")
    drawn = min(count, DRAWN_ENTRIES)
    paths = draw(
        st.lists(
            st.lists(names(max_size=6), min_size=1, max_size=2).map(tuple),
            min_size=drawn,
            max_size=drawn,
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
    if count > drawn:
        event("state dict of more than 8 entries" if count <= 64 else "state dict of 65+ entries")
        seed = draw(st.integers(0, 2**32 - 1), label="bulk seed")
        kinds = [r.torch_dtype for r in allowed]
        bulk = bulk_entries(count - drawn, dtypes=kinds, seed=seed, allow_bytes=allow_bytes)
        taken = set(flatten_state_dict(result)[0])
        result.update({k: v for k, v in bulk.items() if k not in taken})
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
    min_entries: int = 1,
) -> st.SearchStrategy[dict[str, Any]]:
    """Nested state dicts of tensors (views of every kind) and plain objects.

    Non-tensor leaves (ints, strings, lists, bytes) are what DCP stores as
    BytesIO; ``allow_bytes=False`` leaves them out. Flattened names
    (``"outer.inner"``) never collide. Up to :data:`DRAWN_ENTRIES` entries are drawn one by
    one, the rest (``max_entries`` may be hundreds) come from :func:`bulk_entries`.
    ``min_entries`` pins the count from below: a test that needs the largest state dict gets
    it in every draw rather than in a lucky few.
    """
    rows = dt.DTYPES if allowed is None else tuple(row_of(d) for d in allowed)
    check_int("min_entries", min_entries, 1)
    check_int("max_entries", max_entries, min_entries)
    return _state_dict(tuple(rows), (min_entries, max_entries), allow_bytes)


# --- bulk: many small entries from one seed -------------------------------------------------

_PARTS = ("weight", "bias", "running_mean", "scale", "exp_avg", "exp_avg_sq", "step", "mask")
_MODULES = ("layers", "blocks", "h", "encoder.layer", "optim.state")


def _bulk_name(rng: random.Random, index: int) -> str:
    # Numbers of every digit count inside dotted paths: "layers.7.w" and "layers.10.w" sort
    # differently as strings and as numbers.
    module = rng.choice(_MODULES)
    return f"{module}.{index}.{rng.choice(_PARTS)}"


def _bulk_value(rng: random.Random, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    raw = torch.tensor(list(rng.randbytes(math.prod(shape) * row_of(dtype).itemsize)))
    raw = raw.to(torch.uint8) & 1 if dtype is torch.bool else raw.to(torch.uint8)
    return raw.view(dtype).reshape(shape)


def _bulk_tensor(rng: random.Random, dtypes: Sequence[torch.dtype]) -> torch.Tensor:
    shape = tuple(rng.choice((0, 1, 1, 2, 3, 4)) for _ in range(rng.choice((0, 1, 1, 2, 2, 3))))
    value = _bulk_value(rng, rng.choice(dtypes), shape)
    kinds = kinds_for(value)
    return make_view(rng.choice(kinds), value) if kinds else value


def _bulk_object(rng: random.Random, index: int) -> Any:
    choice = rng.randrange(5)
    if choice == 0:
        return rng.randrange(-(2**70), 2**70)
    if choice == 1:
        return f"entry {index} " + "x" * rng.randrange(40)
    if choice == 2:
        return [index, float(index) / 7, None, "step"]
    if choice == 3:
        return rng.randbytes(rng.randrange(24))
    return {"lr": 1e-3 * (index + 1), "betas": (0.9, 0.999), "step": index}


def bulk_entries(
    count: int,
    *,
    dtypes: Sequence[torch.dtype],
    seed: int,
    allow_bytes: bool = True,
) -> dict[str, Any]:
    """``count`` flat entries made deterministically from ``seed``: small tensors of
    ``dtypes`` (any view kind, 0-d and empty ones too), tensors sharing one storage (tied and
    fused weights) and, with ``allow_bytes``, non-tensor objects, interleaved; inserted in
    an order that is neither sorted by name nor by number.
    """
    check_int("count", count, 1)
    if not dtypes:
        raise ValueError("bulk_entries needs at least one dtype")
    rng = random.Random(seed)
    order = list(range(count))
    rng.shuffle(order)
    result: dict[str, Any] = {}
    for index in order:
        if len(result) >= count:
            break
        if allow_bytes and rng.random() < 0.3:
            result[_bulk_name(rng, index)] = _bulk_object(rng, index)
        elif rng.random() < 0.04:
            base = _bulk_value(rng, rng.choice(dtypes), (rng.randrange(2, 5), rng.randrange(1, 4)))
            group = shared_entries(rng.choice(sorted(SHARING)), base)
            result.update({f"shared.{index}.{k}": v for k, v in group.items()})
        else:
            result[_bulk_name(rng, index)] = _bulk_tensor(rng, dtypes)
    return result
