"""What the tests of reading share: items stored in a data file, read requests for them,
sub-boxes to read, and the openers and preadv recorders that show how they are read."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hypothesis import strategies as st

from dcp_impl import transfer
from dcp_impl.layout import Box
from dcp_impl.store import DataFileWriter, LocalFile

__all__ = [
    "DTYPES",
    "bytes_of",
    "chunk_values",
    "store_chunk",
    "read_request",
    "region",
    "assert_filled",
    "sub_boxes",
    "counting_preadv",
    "PreadOnly",
    "two_sub_boxes",
]

DTYPES = [torch.float32, torch.bfloat16, torch.int64, torch.complex64, torch.bool, torch.uint8]


def bytes_of(t: torch.Tensor) -> bytes:
    """The bytes of ``t``'s values in row-major order, as a data file holds them."""
    flat = t.detach().clone(memory_format=torch.contiguous_format).reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def chunk_values(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Deterministic values of ``dtype``: any bit pattern, but 0 or 1 for a bool."""
    g = torch.Generator().manual_seed(seed)
    n = torch.Size(shape).numel() * dtype.itemsize
    high = 2 if dtype == torch.bool else 256  # a bool byte other than 0/1 has no defined value
    return torch.randint(0, high, (n,), dtype=torch.uint8, generator=g).view(dtype).reshape(shape)


def store_chunk(
    path: Path, chunk: torch.Tensor, *, piece_size: int = transfer.PIECE_SIZE
) -> transfer.StoredRange:
    """``chunk`` written to a new data file at ``path``, after a few other bytes, with one
    checksum digest per ``piece_size`` bytes."""
    with DataFileWriter(path, sync=False, piece_size=piece_size) as out:
        out.write_bytes(b"header")  # items need not start at offset 0
        return out.write_tensor(chunk)


def read_request(
    path: Path, stored: transfer.StoredRange, chunk: torch.Tensor, *targets: transfer.Target
) -> transfer.ReadRequest:
    """A request to read the stored ``chunk`` into ``targets``."""
    return transfer.ReadRequest(
        path=str(path),
        offset=stored.offset,
        length=stored.length,
        chunk_sizes=tuple(chunk.shape),
        dtype=chunk.dtype,
        targets=targets,
        checksum=stored.checksum,
        label="'w' chunk",
    )


def region(chunk: torch.Tensor, sub: Box) -> torch.Tensor:
    """The view of ``chunk`` that ``sub`` covers."""
    view = chunk
    for d, (o, s) in enumerate(zip(sub.offsets, sub.sizes, strict=True)):
        view = view.narrow(d, o, s)
    return view


def assert_filled(chunk: torch.Tensor, targets: Sequence[transfer.Target]) -> None:
    """Each bf16 target holds exactly its sub-box of ``chunk``, bit for bit."""
    for t in targets:
        assert torch.equal(t.dest.view(torch.int16), region(chunk, t.sub).view(torch.int16))


@st.composite
def sub_boxes(draw: st.DrawFn, shape: tuple[int, ...]) -> Box:
    """Any sub-box of ``shape``, empty ones included."""
    offsets, sizes = [], []
    for n in shape:
        start = draw(st.integers(0, n))
        offsets.append(start)
        sizes.append(draw(st.integers(0, n - start)))
    return Box(tuple(offsets), tuple(sizes))


def counting_preadv(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes each ``os.preadv`` call reads from now on, until ``monkeypatch`` undoes it."""
    counts: list[int] = []
    real = os.preadv

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        n = real(fd, buffers, offset)
        counts.append(n)
        return n

    monkeypatch.setattr(os, "preadv", preadv)
    return counts


class PreadOnly:
    """A local file that cannot be mapped: read_into must fall back to preadv."""

    def __init__(self, path: str) -> None:
        self._file = LocalFile(path)

    def preadv(self, buffers: list[memoryview], offset: int) -> int:
        return self._file.preadv(buffers, offset)

    def close(self) -> None:
        self._file.close()


def two_sub_boxes(chunk: torch.Tensor) -> list[transfer.Target]:
    """An exact byte span and a strided sub-box of a (16, 32) chunk."""
    boxes = Box((4, 0), (3, 32)), Box((2, 5), (3, 4))
    return [transfer.Target(b, torch.zeros(b.sizes, dtype=chunk.dtype)) for b in boxes]
