"""What a verified read needs beyond the plain one: a whole item or one byte span of it read
piece by piece, each piece checked as it lands (:func:`pread_checked`); any other sub-box cut
into blocks of about one band of bytes each (:func:`blocks`), and the check of the pieces a
block's bytes lie in (:func:`check_piece`).

A verified sub-box read walks its blocks in file order; for each it checks the pieces the
block touches (each piece once per request where the bytes stay in place, as in a mapped
file), then copies the block out while those bytes are still in cache. Only the pieces a
read touches are hashed (docs/format.md, F9).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from dcp_impl.errors import CorruptCheckpointError
from dcp_impl.layout import Box
from dcp_impl.transfer._checksum import Digest
from dcp_impl.transfer._requests import row_major_strides

if TYPE_CHECKING:
    import torch

    from dcp_impl.transfer._checksum import Checksums
    from dcp_impl.transfer._requests import ReadRequest

__all__ = ["blocks", "dest_block", "check_piece", "check_digest", "check_all", "pread_checked"]

HASH_STEP = 1 << 20
"""A verified read lands and hashes an item in steps this big (a piece, where pieces are this
big or smaller), each hashed while still in cache instead of read from memory again
(perf/README.md, "Measurements behind dcp_impl's I/O constants")."""

Pread = Callable[[memoryview, int], None]
"""Fills a buffer from a file offset of the request's file, or raises (truncation)."""


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


def check_all(request: ReadRequest, view: memoryview) -> None:
    """Check every piece of the item whose bytes are ``view``."""
    pieces = request.pieces
    assert pieces is not None  # only requests with a checksum are read verified
    for k in range(pieces.count):
        start, stop = pieces.span(k)
        check_piece(request, pieces, k, view[start:stop])


def pread_checked(
    request: ReadRequest,
    view: memoryview,
    start: int,
    pread: Pread,
    scratch: Callable[[int], memoryview],
) -> None:
    """Read the item's bytes ``[start, start + len(view))`` into ``view`` and check every
    piece they touch, hashing each as it lands (while it is still in cache) instead of
    reading it from memory again. A piece the span cuts through (at most two) is read whole
    into ``scratch(size)``, checked, and the span's part copied out."""
    pieces = request.pieces
    assert pieces is not None  # only requests with a checksum are read verified
    stop = start + len(view)
    for k in pieces.touching(start, stop):
        begin, end = pieces.span(k)
        if start <= begin and end <= stop:
            _pread_piece(request, k, view[begin - start : end - start], pread)
            continue
        piece = scratch(end - begin)
        _pread_piece(request, k, piece, pread)
        low, high = max(begin, start), min(end, stop)
        view[low - start : high - start] = piece[low - begin : high - begin]


def _pread_piece(request: ReadRequest, k: int, view: memoryview, pread: Pread) -> None:
    """Read piece ``k`` into ``view`` and check it, a long one (a whole-item checksum)
    hashed step by step as it lands."""
    pieces = request.pieces
    assert pieces is not None
    at = request.offset + pieces.span(k)[0]
    if len(view) <= HASH_STEP:
        pread(view, at)
        check_piece(request, pieces, k, view)
        return
    digest = Digest()
    for step in range(0, len(view), HASH_STEP):
        part = view[step : step + HASH_STEP]
        pread(part, at + step)
        digest.update(part)
    check_digest(request, pieces, k, digest.hexdigest())
