"""Deterministic sharding layouts, shared by the conformance strategies and perf/.

Each generator returns, for every rank, the list of boxes
(:class:`dcp_impl.layout.Box`) that rank holds of one tensor. Splits follow
``torch.chunk`` / DTensor ``Shard`` semantics: parts of ``ceil(length / parts)``
elements, the last ones possibly shorter or empty. An empty part is placed at
the end of the dimension, as DTensor reports it.
"""

from __future__ import annotations

from collections.abc import Sequence

from dcp_impl.layout import Box

__all__ = ["chunk_1d", "col_shards", "grid", "replicated", "row_shards", "shard_dim"]

RankBoxes = list[list[Box]]


def chunk_1d(length: int, parts: int) -> list[tuple[int, int]]:
    """``(offset, size)`` of each of ``parts`` pieces of ``length``, as ``torch.chunk`` splits."""
    if parts < 1 or length < 0:
        raise ValueError(f"chunk_1d needs length >= 0 and parts >= 1, got {length=}, {parts=}")
    step = -(-length // parts) if length else 0
    pieces = []
    for k in range(parts):
        start = min(k * step, length)
        pieces.append((start, min(step, length - start)))
    return pieces


def shard_dim(shape: Sequence[int], dim: int, ranks: int) -> RankBoxes:
    """Shard dimension ``dim`` of ``shape`` over ``ranks``, one box per rank."""
    if not 0 <= dim < len(shape):
        raise ValueError(f"cannot shard dim {dim} of a {len(shape)}-dim shape {tuple(shape)}")
    boxes = []
    for start, size in chunk_1d(shape[dim], ranks):
        offsets = [0] * len(shape)
        sizes = list(shape)
        offsets[dim], sizes[dim] = start, size
        boxes.append([Box(tuple(offsets), tuple(sizes))])
    return boxes


def row_shards(shape: Sequence[int], ranks: int) -> RankBoxes:
    """FSDP-style: dimension 0 split over ``ranks``."""
    return shard_dim(shape, 0, ranks)


def col_shards(shape: Sequence[int], ranks: int) -> RankBoxes:
    """Tensor-parallel style: the last dimension split over ``ranks``."""
    return shard_dim(shape, len(shape) - 1, ranks)


def grid(shape: Sequence[int], rows: int, cols: int) -> RankBoxes:
    """2-D (FSDP x TP): dim 0 over ``rows``, dim 1 over ``cols``; rank = row * cols + col."""
    if len(shape) < 2:
        raise ValueError(f"a grid needs at least 2 dims, got shape {tuple(shape)}")
    boxes = []
    for r0, rn in chunk_1d(shape[0], rows):
        for c0, cn in chunk_1d(shape[1], cols):
            rest = tuple(shape[2:])
            boxes.append([Box((r0, c0) + (0,) * len(rest), (rn, cn, *rest))])
    return boxes


def replicated(shape: Sequence[int], ranks: int) -> RankBoxes:
    """Every rank holds the whole tensor."""
    return [[Box.full(shape)] for _ in range(ranks)]
