"""Strategies for state dicts: nested dicts of tensors (maybe non-contiguous) and plain objects."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from hypothesis import event
from hypothesis import strategies as st

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

__all__ = ["state_dicts"]


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
    rows = dt.DTYPES if allowed is None else tuple(row_of(d) for d in allowed)
    check_int("max_entries", max_entries, 1)
    return _state_dict(tuple(rows), max_entries, allow_bytes)
