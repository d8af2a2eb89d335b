"""What a verified read of part of an item needs: the sub-box cut into blocks of about one
band of bytes each, and the check of the pieces a block's bytes lie in.

A verified sub-box read walks its blocks in file order; for each it checks the pieces the
block touches (each piece once per request where the bytes stay in place, as in a mapped
file), then copies the block out while those bytes are still in cache. Only the pieces a
sub-box touches are hashed (docs/format.md, F9).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from dcp_impl.errors import CorruptCheckpointError
from dcp_impl.io._requests import row_major_strides
from dcp_impl.layout import Box

if TYPE_CHECKING:
    import torch

    from dcp_impl.io._checksum import Checksums
    from dcp_impl.io._requests import ReadRequest

__all__ = ["blocks", "dest_block", "check_piece", "check_digest"]


def blocks(chunk_sizes: tuple[int, ...], sub: Box, itemsize: int, band: int) -> Iterator[Box]:
    """``sub`` (non-empty, in the chunk's frame) cut into boxes, in file order, each spanning
    at most about ``band`` bytes of the chunk (at least one element of the first dimension
    whose stride fits the band)."""
    ndim = len(chunk_sizes)
    if ndim == 0:
        yield sub
        return
    strides = row_major_strides(chunk_sizes)
    d = next(d for d in range(ndim) if strides[d] * itemsize <= band)
    rows = max(1, band // max(strides[d] * itemsize, 1))
    lead = [range(o, o + s) for o, s in zip(sub.offsets[:d], sub.sizes[:d], strict=True)]
    first, stop = sub.offsets[d], sub.offsets[d] + sub.sizes[d]
    ones = (1,) * d
    for prefix in itertools.product(*lead):
        for row in range(first, stop, rows):
            yield Box(
                (*prefix, row, *sub.offsets[d + 1 :]),
                (*ones, min(rows, stop - row), *sub.sizes[d + 1 :]),
            )


def dest_block(dest: torch.Tensor, sub: Box, block: Box) -> torch.Tensor:
    """The view of ``dest`` (which holds ``sub``) that holds ``block``, a box inside ``sub``."""
    if block == sub:
        return dest
    pairs = zip(block.offsets, sub.offsets, block.sizes, strict=True)
    index = tuple(slice(b - s, b - s + n) for b, s, n in pairs)
    return dest[index]


def check_piece(request: ReadRequest, pieces: Checksums, k: int, data: memoryview) -> None:
    """Compare piece ``k``'s bytes ``data`` with its digest; a mismatch is
    :class:`~dcp_impl.errors.CorruptCheckpointError` naming the file, item and bytes."""
    check_digest(request, pieces, k, pieces.found(data))


def check_digest(request: ReadRequest, pieces: Checksums, k: int, found: str) -> None:
    """Compare piece ``k``'s digest ``found`` with the one stored (as :func:`check_piece`)."""
    expected = pieces.digest(k)
    if found != expected:
        start, stop = pieces.span(k)
        which = f" (piece {k} of {pieces.count})" if pieces.count > 1 else ""
        raise CorruptCheckpointError(
            f"{request.path}: item {request.label} at bytes "
            f"[{request.offset + start}, {request.offset + stop}){which} fails its checksum: "
            f"expected {pieces.algorithm}:{expected}, found {pieces.algorithm}:{found}"
        )
