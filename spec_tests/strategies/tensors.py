"""Strategies for tensors: dtypes, shapes, raw bit patterns, names and non-contiguous views.

Every dtype of the table works (float8, bits, complex32, float4 included) because values are
written as bytes and viewed, never converted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.vendor.pretty import RepresentationPrinter, for_type_by_name

from dcp_impl import dtypes as dt
from spec_tests.strategies.views import views

__all__ = [
    "RESERVED_NAMES",
    "check_int",
    "dtypes",
    "names",
    "noncontiguous",
    "row_of",
    "shapes",
    "tensor_values",
]

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
    return dt.raw_bytes(tensor)[:limit].tolist()  # any strides, conj/neg bits resolved


for_type_by_name("torch", "Tensor", _pretty_tensor)


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return value


def row_of(dtype: dt.DtypeInfo | torch.dtype | str) -> dt.DtypeInfo:
    if isinstance(dtype, dt.DtypeInfo):
        return dtype
    if isinstance(dtype, str):
        return dt.by_name(dtype)
    return dt.by_torch(dtype)


def dtypes(
    *, allowed: Iterable[dt.DtypeInfo | torch.dtype | str] | None = None
) -> st.SearchStrategy[dt.DtypeInfo]:
    """Rows of the dtype table (all of them by default), shrinking toward the first."""
    rows = dt.DTYPES if allowed is None else tuple(row_of(d) for d in allowed)
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
    check_int("min_dims", min_dims, 0)
    check_int("max_dims", max_dims, min_dims)
    check_int("max_side", max_side, 0)
    check_int("max_elements", max_elements, 1)
    if max_side**max_dims <= max_elements:
        sides = st.lists(st.integers(0, max_side), min_size=min_dims, max_size=max_dims)
        return sides.map(_labelled_shape)
    # Long sides (up to ~100): each side bounded by what the ones before it leave, so no
    # draw is thrown away (a filter would reject most 3-D draws).
    return _bounded_sides(min_dims, max_dims, max_side, max_elements).map(_labelled_shape)


@st.composite
def _bounded_sides(
    draw: st.DrawFn, min_dims: int, max_dims: int, max_side: int, max_elements: int
) -> list[int]:
    ndim = draw(st.integers(min_dims, max_dims), label="ndim")
    sides: list[int] = []
    for _ in range(ndim):
        room = max_elements // max(1, math.prod(sides))
        sides.append(draw(st.integers(0, min(max_side, room)), label="side"))
    if sides and max(sides) >= 10:
        event("a side of 10 or more")
    return sides


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


def special_values(dtype: dt.DtypeInfo | torch.dtype | str) -> torch.Tensor:
    """A 1-D tensor holding each special bit pattern of ``dtype`` once (zero, all ones, -0.0,
    extremes, inf, NaNs with payloads): the named values every run saves, whatever it draws."""
    row = row_of(dtype)
    patterns = _special_patterns(row)
    return _from_bytes(b"".join(patterns), row, (len(patterns),))


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
    row = row_of(dtype)
    shape_t = tuple(check_int("shape side", s, 0) for s in shape)
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
    check_int("max_size", max_size, 1)
    return st.text(_NAME_ALPHABET, min_size=1, max_size=max_size).filter(
        lambda name: name not in RESERVED_NAMES
    )


def noncontiguous(tensor: torch.Tensor) -> st.SearchStrategy[torch.Tensor]:
    """Views of ``tensor`` of every kind that applies (:func:`~.views.views`).

    Storage offsets, strided slices, transposes and permutes, channels_last, inner-dim cuts,
    broadcasts, conj/neg views; the first option is the tensor itself, so this shrinks away.
    """
    return views(tensor)
