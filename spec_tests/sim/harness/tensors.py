"""Tensor helpers of the harness: cutting a tensor into rank boxes, bit-exact comparison."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dcp_impl.dtypes import raw_bytes
from dcp_impl.layout import Box
from spec_tests.contract.verdicts import ContractViolation

__all__ = ["SENTINEL", "Shards", "as_bytes", "assert_bit_equal", "region", "shard"]

SENTINEL = 0xA5
"""Byte every load destination holds before the backend writes it."""


@dataclass(frozen=True, slots=True, eq=False)
class Shards:
    """The chunks of one sharded tensor that a rank holds (each may be a non-contiguous view)."""

    shape: tuple[int, ...]
    chunks: tuple[tuple[Box, torch.Tensor], ...]

    def __post_init__(self) -> None:
        for box, chunk in self.chunks:
            if tuple(chunk.shape) != box.sizes:
                raise ValueError(f"chunk of shape {tuple(chunk.shape)} does not match {box}")


def shard(
    value: torch.Tensor, boxes: Sequence[Sequence[Box]]
) -> list[torch.Tensor | Shards | None]:
    """Per rank, what it holds of ``value`` under ``boxes[rank]``: nothing, all, or Shards."""
    shape = tuple(value.shape)
    # DCP never mixes TENSOR and SHARD items of one entry: plain tensors only when
    # every holder has the whole tensor (unsharded or replicated).
    whole = all(list(r) == [Box.full(shape)] for r in boxes if r)
    out: list[torch.Tensor | Shards | None] = []
    for rank_boxes in boxes:
        if not rank_boxes:
            out.append(None)
        elif whole:
            out.append(value)
        else:
            out.append(Shards(shape, tuple((b, region(value, b)) for b in rank_boxes)))
    return out


def region(tensor: torch.Tensor, box: Box) -> torch.Tensor:
    """The view of ``tensor`` that ``box`` covers."""
    for dim, (start, length) in enumerate(zip(box.offsets, box.sizes, strict=True)):
        tensor = tensor.narrow(dim, start, length)
    return tensor


def as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The row-major bytes of ``tensor`` as a flat uint8 tensor (any dtype, any strides)."""
    return raw_bytes(tensor)  # a view when contiguous: the nightly sizes are GiB


def assert_bit_equal(actual: torch.Tensor, expected: torch.Tensor, *, what: str) -> None:
    """Raise ContractViolation unless the tensors agree in dtype, shape and every bit."""
    if actual.dtype != expected.dtype or tuple(actual.shape) != tuple(expected.shape):
        raise ContractViolation(
            f"{what}: expected dtype {expected.dtype} shape {tuple(expected.shape)}, "
            f"found dtype {actual.dtype} shape {tuple(actual.shape)}"
        )
    got, want = as_bytes(actual), as_bytes(expected)
    if torch.equal(got, want):
        return
    itemsize = max(1, want.numel() // max(1, expected.numel()))
    bad = torch.nonzero(got != want).flatten()
    elements = sorted({int(i) // itemsize for i in bad[:256]})[:4]
    shown = "; ".join(
        f"element {e}: expected {bytes(want[e * itemsize : (e + 1) * itemsize].tolist()).hex()} "
        f"found {bytes(got[e * itemsize : (e + 1) * itemsize].tolist()).hex()}"
        for e in elements
    )
    unwritten = bool((got[bad] == SENTINEL).all())
    hint = (
        " (every wrong byte still holds the sentinel: the backend never wrote it)"
        if unwritten
        else ""
    )
    raise ContractViolation(f"{what}: {bad.numel()} of {want.numel()} bytes differ{hint}: {shown}")
