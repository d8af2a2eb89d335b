"""A sub-box of a row-major chunk as runs of contiguous bytes, and vectored reads of them.

A sub-box that spans its chunk's trailing dimensions fully from some dimension ``k + 1`` on
is, in the file, one run of ``sizes[k] * (product of the chunk's trailing sizes)`` elements
per index of its leading dimensions ``0..k-1``; its destination, when contiguous, is those
runs back to back. The runs of every target of one stored item, sorted by file offset, are
read by as few ``os.preadv`` calls as possible: their buffers are the destination runs in
file order, with a scratch buffer swallowing the bytes between two runs that no target wants
(two column halves of a chunk thus read it once, with no scratch at all).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from dcp_impl.layout import Box

__all__ = [
    "Piece",
    "Runs",
    "plan_runs",
    "largest_gap",
    "vectored",
]


Piece = tuple[int, memoryview]
"""A destination buffer and the file offset its bytes come from."""


@dataclass(frozen=True, slots=True)
class Runs:
    """The bytes of a sub-box: ``len(starts)`` runs of ``length`` bytes, in row-major order.

    ``starts`` are byte offsets in the chunk, increasing.
    """

    length: int
    starts: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.length < 0:
            raise ValueError(f"runs: expected a non-negative length, found {self.length}")

    def pieces(self, dest: memoryview, base: int) -> list[Piece]:
        """``(file offset, buffer)`` per run: ``dest`` holds the runs back to back and
        ``base`` is the chunk's file offset."""
        n = self.length
        return [(base + start, dest[i * n : (i + 1) * n]) for i, start in enumerate(self.starts)]


def plan_runs(chunk_sizes: Sequence[int], sub: Box, itemsize: int) -> Runs:
    """The runs of the non-empty sub-box ``sub`` (in the chunk's frame) of a row-major chunk."""
    ndim = len(chunk_sizes)
    if ndim == 0:
        return Runs(itemsize, (0,))
    strides = [1] * ndim
    for d in range(ndim - 2, -1, -1):
        strides[d] = strides[d + 1] * chunk_sizes[d + 1]
    k = ndim - 1  # the last dimension the sub-box does not span fully (or 0)
    while k > 0 and sub.sizes[k] == chunk_sizes[k]:
        k -= 1
    starts = np.array([sub.offsets[k] * strides[k]], dtype=np.int64)
    for d in range(k - 1, -1, -1):
        rows = np.arange(sub.offsets[d], sub.offsets[d] + sub.sizes[d], dtype=np.int64)
        starts = np.add.outer(rows * strides[d], starts).ravel()  # dimension d varies slowest
    starts *= itemsize
    return Runs(sub.sizes[k] * strides[k] * itemsize, tuple(starts.tolist()))


def largest_gap(pieces: Sequence[Piece]) -> int:
    """The most bytes between the end of one piece and the start of the next (sorted pieces)."""
    gap = 0
    for (position, buffer), (following, _) in itertools.pairwise(pieces):
        gap = max(gap, following - position - len(buffer))
    return gap


def vectored(
    pieces: Sequence[Piece], scratch: memoryview, iov_max: int
) -> Iterator[tuple[int, list[memoryview]]]:
    """The ``(file offset, buffers)`` of each ``preadv`` call that fills the sorted ``pieces``.

    The bytes between two pieces go to ``scratch`` (reused: its contents are garbage). A gap
    longer than ``scratch``, pieces that overlap in the file, or a call at ``iov_max``
    buffers (``Tuning.iov_max``) start a new call.
    """
    buffers: list[memoryview] = []
    first = end = 0
    for position, buffer in pieces:
        gap = position - end
        if buffers and (not 0 <= gap <= len(scratch) or len(buffers) + 2 > iov_max):
            yield first, buffers
            buffers = []
        if not buffers:
            first = position
        elif gap:
            buffers.append(scratch[:gap])
        buffers.append(buffer)
        end = position + len(buffer)
    if buffers:
        yield first, buffers
