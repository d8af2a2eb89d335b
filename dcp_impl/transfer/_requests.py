"""Read requests: a stored item, the targets it fills, and the views and errors of both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from dcp_impl import dtypes
from dcp_impl.errors import CorruptCheckpointError, InvalidMetadataError
from dcp_impl.layout import Box, byte_span
from dcp_impl.transfer._checksum import CHECKSUM_ALGORITHM, Checksums

__all__ = [
    "Target",
    "coalesced",
    "ReadRequest",
    "is_direct",
    "bytes_at",
    "live",
    "truncated",
    "sub_view",
    "row_major_strides",
]


@dataclass(frozen=True, slots=True)
class Target:
    """Fill ``dest`` with the sub-box ``sub`` of a stored chunk (``sub`` in the chunk's frame).

    ``dest`` has ``sub.sizes`` as its shape and may live on any device with any strides.
    """

    sub: Box
    dest: torch.Tensor

    def __post_init__(self) -> None:
        if tuple(self.dest.shape) != self.sub.sizes:
            raise ValueError(f"destination shape {tuple(self.dest.shape)} != sub-box {self.sub}")


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One stored item (a row-major chunk at ``[offset, offset + length)`` of ``path``).

    ``label`` names the item in error messages; ``checksum`` (the checksum text, one digest
    per piece: :func:`piece_checksum`) is checked when the item is read with ``verify=True``,
    and skipped when None; ``pieces`` is that text parsed.
    """

    path: str
    offset: int
    length: int
    chunk_sizes: tuple[int, ...]
    dtype: torch.dtype
    targets: tuple[Target, ...]
    checksum: str | None = None
    label: str = ""
    pieces: Checksums | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expected = Box.full(self.chunk_sizes).numel * dtypes.by_torch(self.dtype).itemsize
        if self.offset < 0 or self.length != expected:
            raise InvalidMetadataError(
                f"{self.path}: item {self.label}: expected {expected} bytes for a "
                f"{self.dtype} chunk of sizes {self.chunk_sizes} at offset >= 0, "
                f"found {self.length} bytes at offset {self.offset}"
            )
        if self.checksum is None:
            return
        try:
            pieces = Checksums.parse(self.checksum, self.length)
        except InvalidMetadataError as err:
            raise InvalidMetadataError(f"{self.path}: item {self.label}: checksum: {err}") from err
        if pieces.algorithm != CHECKSUM_ALGORITHM or pieces.width != 16:
            raise InvalidMetadataError(
                f"{self.path}: item {self.label}: checksum {self.checksum!r:.80} is not "
                f"'{CHECKSUM_ALGORITHM}:<16 hex digits per piece>'"
            )
        object.__setattr__(self, "pieces", pieces)


def is_direct(dest: torch.Tensor) -> bool:
    """Whether bytes can be read straight into ``dest``'s memory (on any device)."""
    return (
        dest.layout == torch.strided
        and dest.is_contiguous()
        and not dest.is_conj()
        and not dest.is_neg()
    )


def bytes_at(buffer: memoryview, offset: int, length: int) -> torch.Tensor:
    """``buffer[offset : offset + length]`` as a uint8 tensor sharing its memory, whose own
    storage starts there: viewing it as the item's dtype works at any offset."""
    if length == 0:
        return torch.empty(0, dtype=torch.uint8)
    return torch.frombuffer(buffer, dtype=torch.uint8, offset=offset, count=length)


def live(request: ReadRequest) -> list[Target]:
    """The targets of ``request`` that take any element."""
    return [t for t in request.targets if not t.sub.is_empty]


def truncated(request: ReadRequest, expected_end: int, found_end: int) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"{request.path}: item {request.label} is truncated: expected bytes up to "
        f"{expected_end}, found end of file at {found_end}"
    )


def sub_view(
    request: ReadRequest,
    item: torch.Tensor,
    target: Target,
    base: int = 0,
    start: int | None = None,
) -> torch.Tensor:
    """``target.sub`` as a strided view of ``item``: bytes of the request's chunk from the
    chunk's byte ``base`` on (0 when ``item`` holds the whole chunk). ``start``, where the
    caller has it, is the sub-box's first byte in the chunk (its ``byte_span``)."""
    itemsize = dtypes.by_torch(request.dtype).itemsize
    if start is None:
        start, _, _ = byte_span(request.chunk_sizes, target.sub, itemsize)
    values = item.view(request.dtype)  # few tensor calls: this runs for every target
    first = values.storage_offset() + (start - base) // itemsize
    return values.as_strided(target.sub.sizes, row_major_strides(request.chunk_sizes), first)


def row_major_strides(sizes: Sequence[int]) -> tuple[int, ...]:
    strides = [1] * len(sizes)
    for d in range(len(sizes) - 2, -1, -1):
        strides[d] = strides[d + 1] * sizes[d + 1]
    return tuple(strides)


def coalesced(ordered: Sequence[ReadRequest], limit: int) -> list[list[ReadRequest]]:
    """Runs of consecutive ``ordered`` requests of one file spanning at most ``limit`` bytes
    from the first one's start to the furthest end (one request each when ``limit`` is 0)."""
    batches: list[list[ReadRequest]] = []
    start = end = 0
    for request in ordered:
        stop = request.offset + request.length
        same_file = batches and batches[-1][0].path == request.path
        if limit > 0 and same_file and max(end, stop) - start <= limit:
            batches[-1].append(request)
            end = max(end, stop)
        else:
            batches.append([request])
            start, end = request.offset, stop
    return batches
