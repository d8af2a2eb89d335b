"""Damage placed by content: a tensor of unique 8-byte values, whose element's stored copy
is found in the checkpoint's files and damaged there, near or far from what a read returns.

The suite knows nothing of a backend's file layout; every DCP backend stores a chunk's
values as their raw bytes, though, so an element of random 64 bits is found by searching
the stored files for it (and never anywhere else, but by a 2**-64 chance).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from hypothesis import note
from hypothesis import strategies as st

from dcp_impl.layout import Box
from spec_tests.backends import Backend
from spec_tests.contract.capabilities import PIECE_REACH, claimed_dtypes
from spec_tests.sim.harness.damage import flip_stored

__all__ = [
    "PIECE_REACH",
    "ROWS",
    "COLS",
    "ROW_BYTES",
    "unique_values",
    "row_box",
    "flipped",
    "far_rows",
]

ROWS, COLS = 512, 1024
"""The tensor's shape: 4 MiB of 8-byte values, four times :data:`PIECE_REACH`."""
ROW_BYTES = COLS * 8
_EIGHT_BYTES = (torch.int64, torch.uint64, torch.float64, torch.complex64)


def unique_values(data: st.DataObject, backend: Backend) -> torch.Tensor:
    """A ``ROWS x COLS`` tensor of a claimed 8-byte dtype whose elements' bytes are random
    and distinct (skips where no 8-byte dtype is claimed)."""
    claimed = [d for d in claimed_dtypes(backend) if d in _EIGHT_BYTES]
    if not claimed:
        pytest.skip(f"backend {backend.name!r} claims no 8-byte dtype ({_EIGHT_BYTES})")
    dtype = data.draw(st.sampled_from(claimed), label="dtype")
    seed = data.draw(st.integers(0, 2**32 - 1), label="values seed")
    words = torch.randint(
        -(2**63),
        2**63 - 1,
        (ROWS * COLS,),
        dtype=torch.int64,
        generator=torch.Generator().manual_seed(seed),
    )
    if len(set(words.tolist())) != words.numel():  # a 2**-40 chance: make them distinct
        words = words ^ torch.arange(words.numel())
    return words.view(dtype).reshape(ROWS, COLS)


def row_box(data: st.DataObject, *, max_rows: int) -> Box:
    """A sub-box of the tensor: up to ``max_rows`` rows, any run of columns."""
    rows = data.draw(st.integers(1, max_rows), label="box rows")
    first = data.draw(st.integers(0, ROWS - rows), label="box first row")
    col = data.draw(st.integers(0, COLS - 1), label="box first column")
    cols = data.draw(st.integers(1, COLS - col), label="box columns")
    return Box((first, col), (rows, cols))


@contextmanager
def flipped(location: str, value: torch.Tensor, row: int, col: int, bit: int) -> Iterator[None]:
    """The stored copy of ``value[row, col]`` with one bit flipped, put back on leaving
    (skips where the element's bytes are not found exactly once in the stored files)."""
    needle = value[row, col].reshape(1).view(torch.uint8).numpy().tobytes()
    done = flip_stored(location, needle, bit)
    if done is None:
        pytest.skip("the stored bytes of an element were not found exactly once (transformed?)")
    note(f"flipped bit {bit} of element [{row}, {col}]: {done}")
    try:
        yield
    finally:
        flip_stored(location, _flip(needle, bit), bit)


def _flip(needle: bytes, bit: int) -> bytes:
    raw = bytearray(needle)
    raw[bit // 8] ^= 1 << (bit % 8)
    return bytes(raw)


def far_rows(box: Box) -> list[int]:
    """Rows whose every byte is more than :data:`PIECE_REACH` from the box's byte span in a
    row-major copy of the tensor."""
    reach_rows = PIECE_REACH // ROW_BYTES + 1
    first, last = box.offsets[0], box.offsets[0] + box.sizes[0] - 1
    return [r for r in range(ROWS) if r < first - reach_rows or r > last + reach_rows]
