"""The named, frozen benchmark workloads (documented in perf/README.md).

A workload is a list of tensors (a state dict scaled by ``--perf-size``) plus
the layout it is saved in and the layout it is loaded into. Layouts come from
the shared generator :mod:`spec_tests.sim.shardings`; a layout that cannot split a
tensor of too few dimensions falls back to the nearest one that can (a grid
splits 1-D tensors by rows; 0-dim tensors are replicated and saved once).

Everything is deterministic: the same name and size give the same bytes.
Changing a workload's definition invalidates saved baselines, so add a new
name instead of editing an old one.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from dcp_impl.layout import Box
from spec_tests.api import Piece, region, shardings

__all__ = [
    "MiB",
    "GiB",
    "SIZES",
    "parse_size",
    "TensorSpec",
    "Layout",
    "Workload",
    "WORKLOADS",
    "UNSHARDED",
    "SHARDED",
    "RESHARD",
    "METADATA",
    "FIRST_READ",
    "Piece",
    "transformer_specs",
    "bf16x64_specs",
    "tiny_specs",
    "make_tensors",
    "split",
    "fresh_targets",
    "nbytes",
]

MiB = 1 << 20
GiB = 1 << 30
SIZES: dict[str, int] = {"tiny": 4 * MiB, "small": 64 * MiB, "default": GiB}
_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": MiB, "GIB": GiB}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMG]IB|B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes meant by ``--perf-size``: a name in :data:`SIZES`, or ``64MiB``, ``1GiB``, ``4096``."""
    if text in SIZES:
        return SIZES[text]
    match = _SIZE_RE.match(text)
    if match is None or int(match[1]) == 0:
        raise ValueError(
            f"--perf-size: expected one of {sorted(SIZES)} or a positive size such as 64MiB, "
            f"got {text!r}"
        )
    return int(match[1]) * _UNITS[(match[2] or "").upper()]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor of a workload's state dict."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of the whole tensor."""
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True, slots=True)
class Layout:
    """How each tensor is split over simulated ranks; ``kind`` names a shardings split."""

    kind: str  # "row", "col" or "grid"
    ranks: int
    cols: int = 1  # grid only: ranks = rows * cols

    def __post_init__(self) -> None:
        if self.kind not in ("row", "col", "grid") or self.ranks < 1:
            raise ValueError(f"layout: expected kind row/col/grid and ranks >= 1, got {self}")
        if self.kind == "grid" and (self.cols < 1 or self.ranks % self.cols):
            raise ValueError(f"grid layout: {self.ranks} ranks do not split into {self.cols} cols")

    @property
    def name(self) -> str:
        """``row8``, ``col2``, ``grid4x2``; ``single`` for one rank holding everything."""
        if self.ranks == 1:
            return "single"
        if self.kind == "grid":
            return f"grid{self.ranks // self.cols}x{self.cols}"
        return f"{self.kind}{self.ranks}"

    def boxes(self, shape: Sequence[int]) -> list[list[Box]]:
        """Per rank, the boxes of a tensor of ``shape`` that the rank holds."""
        if not shape:
            return shardings.replicated(shape, self.ranks)
        if self.kind == "col":
            return shardings.col_shards(shape, self.ranks)
        if self.kind == "grid" and len(shape) >= 2:
            return shardings.grid(shape, self.ranks // self.cols, self.cols)
        return shardings.row_shards(shape, self.ranks)


SINGLE = Layout("row", 1)


@dataclass(frozen=True, slots=True)
class Workload:
    """A named benchmark case: which tensors, saved in which layout, loaded into which."""

    name: str
    about: str
    model: str  # "transformer" or "bf16x64"
    save: Layout = SINGLE
    load: Layout = SINGLE

    def __post_init__(self) -> None:
        known = (*_MODELS, *_CHUNK_COUNTS, *_SHARD_SCALES)
        if self.model not in known:
            raise ValueError(f"workload {self.name}: expected a model in {known}, got {self.model}")

    @property
    def sharded(self) -> bool:
        """Whether more than one rank saves or loads it."""
        return self.save.ranks > 1 or self.load.ranks > 1

    def tensors(self, size: int) -> tuple[TensorSpec, ...]:
        """The tensors, about ``size`` bytes in all (the metadata scales ignore ``size``)."""
        if self.model in _CHUNK_COUNTS:
            return tiny_specs(_CHUNK_COUNTS[self.model])
        if self.model in _SHARD_SCALES:
            return shard_scale_specs(_SHARD_SCALES[self.model])
        return _MODELS[self.model](size)


def transformer_specs(size: int) -> tuple[TensorSpec, ...]:
    """A decoder's state dict: bf16 weights, fp32 Adam moments and a 0-dim fp32 step per weight.

    8 layers of qkv / out / mlp up / mlp down matrices and two norms, a vocab of 8x the
    hidden size, hidden size a multiple of 64 picked so the total is close to ``size``
    (10 bytes per parameter: 2 for the weight, 4 + 4 for the moments).
    """
    hidden = max(64, round(math.sqrt(size / (10 * 104)) / 64) * 64)
    weights: list[tuple[str, tuple[int, ...]]] = [("embed.weight", (8 * hidden, hidden))]
    for i in range(8):
        weights += [
            (f"layers.{i}.attn.qkv.weight", (3 * hidden, hidden)),
            (f"layers.{i}.attn.out.weight", (hidden, hidden)),
            (f"layers.{i}.mlp.up.weight", (4 * hidden, hidden)),
            (f"layers.{i}.mlp.down.weight", (hidden, 4 * hidden)),
            (f"layers.{i}.norm1.weight", (hidden,)),
            (f"layers.{i}.norm2.weight", (hidden,)),
        ]
    weights.append(("final_norm.weight", (hidden,)))
    specs = [TensorSpec(f"model.{name}", shape, torch.bfloat16) for name, shape in weights]
    for name, shape in weights:
        specs += [
            TensorSpec(f"optim.{name}.exp_avg", shape, torch.float32),
            TensorSpec(f"optim.{name}.exp_avg_sq", shape, torch.float32),
            TensorSpec(f"optim.{name}.step", (), torch.float32),
        ]
    return tuple(specs)


def bf16x64_specs(size: int) -> tuple[TensorSpec, ...]:
    """64 equal bf16 matrices of 2048 columns: exactly 1 GiB at the default size."""
    rows = max(1, size // (64 * 2048 * 2))
    return tuple(TensorSpec(f"w{k:02d}", (rows, 2048), torch.bfloat16) for k in range(64))


def tiny_specs(count: int) -> tuple[TensorSpec, ...]:
    """``count`` tensors of 4 float32 each: a checkpoint that is nearly all metadata."""
    return tuple(TensorSpec(f"p{k:06d}", (4,), torch.float32) for k in range(count))


def shard_scale_specs(count: int) -> tuple[TensorSpec, ...]:
    """``count`` bf16 tensors of ``SHARDS`` rows of 4: one chunk per row when row-sharded."""
    return tuple(TensorSpec(f"layers.{k}.w", (SHARDS, 4), torch.bfloat16) for k in range(count))


SHARDS = 1000
_MODELS = {"transformer": transformer_specs, "bf16x64": bf16x64_specs}
_CHUNK_COUNTS = {"chunks1k": 1_000, "chunks10k": 10_000, "chunks100k": 100_000}
# Tensors of SHARDS row shards each: metadata of 10k to 1M chunks (time to first read).
_SHARD_SCALES = {"sharded10k": 10, "sharded100k": 100, "sharded300k": 300, "chunks1m": 1000}

_ROW8, _ROW4, _ROW2 = Layout("row", 8), Layout("row", 4), Layout("row", 2)
_COL8, _COL2, _GRID4X2 = Layout("col", 8), Layout("col", 2), Layout("grid", 8, 2)
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("transformer", "transformer state dict, one rank", "transformer"),
        Workload("bf16x64", "64 bf16 tensors of equal size, one rank", "bf16x64"),
        Workload("fsdp8", "transformer, row shards over 8 ranks", "transformer", _ROW8, _ROW8),
        Workload("tp8", "transformer, column shards over 8 ranks", "transformer", _COL8, _COL8),
        Workload("2d", "transformer, 4x2 grid over 8 ranks", "transformer", _GRID4X2, _GRID4X2),
        Workload("row8-to-row2", "saved as 8 row shards, loaded as 2", "transformer", _ROW8, _ROW2),
        Workload("row4-to-row8", "saved as 4 row shards, loaded as 8", "transformer", _ROW4, _ROW8),
        Workload(
            "row4-to-col2",
            "saved as 4 row shards, loaded as 2 column shards",
            "transformer",
            _ROW4,
            _COL2,
        ),
        *(
            Workload(name, f"{n} tiny tensors (metadata scale)", name)
            for name, n in _CHUNK_COUNTS.items()
        ),
        *(
            Workload(
                name,
                f"{n} tensors x {SHARDS} row shards (time to first read)",
                name,
                Layout("row", SHARDS),
            )
            for name, n in _SHARD_SCALES.items()
        ),
    )
}
UNSHARDED = ("transformer", "bf16x64")
SHARDED = ("fsdp8", "tp8", "2d")
RESHARD = ("row8-to-row2", "row4-to-row8", "row4-to-col2")
METADATA = tuple(_CHUNK_COUNTS)
FIRST_READ = tuple(_SHARD_SCALES)


def make_tensors(specs: Sequence[TensorSpec]) -> dict[str, torch.Tensor]:
    """Deterministic values for ``specs``: each tensor seeded from its own name."""
    out = {}
    for spec in specs:
        gen = torch.Generator().manual_seed(zlib.crc32(spec.name.encode()))
        out[spec.name] = torch.randn(spec.shape, generator=gen).to(spec.dtype)
    return out


def split(tensors: Mapping[str, torch.Tensor], layout: Layout, *, save: bool) -> list[list[Piece]]:
    """Per rank, the pieces of ``tensors`` that ``layout`` gives it, as contiguous tensors.

    Empty boxes are left out. With ``save``, a box held by several ranks (replicated)
    goes to the first one only, as DCP's save planner deduplicates it. One rank's
    pieces are the tensors themselves; sharded pieces are copies, since a real rank
    owns its shard as a separate contiguous tensor.
    """
    ranks: list[list[Piece]] = [[] for _ in range(layout.ranks)]
    for fqn, tensor in tensors.items():
        shape = tuple(tensor.shape)
        seen: set[Box] = set()
        for rank, boxes in enumerate(layout.boxes(shape)):
            for box in boxes:
                if box.is_empty or (save and box in seen):
                    continue
                seen.add(box)
                part = tensor if box == Box.full(shape) else region(tensor, box).clone()
                ranks[rank].append(Piece(fqn, shape, box, part))
    return ranks


def fresh_targets(
    specs: Sequence[TensorSpec], layout: Layout, device: torch.device | str = "cpu"
) -> list[list[Piece]]:
    """Per rank, zero-filled (so already touched) destination pieces for a load."""
    ranks: list[list[Piece]] = [[] for _ in range(layout.ranks)]
    for spec in specs:
        for rank, boxes in enumerate(layout.boxes(spec.shape)):
            ranks[rank] += [
                Piece(
                    spec.name,
                    spec.shape,
                    box,
                    torch.zeros(box.sizes, dtype=spec.dtype, device=device),
                )
                for box in boxes
                if not box.is_empty
            ]
    return ranks


def nbytes(ranks: Sequence[Sequence[Piece]]) -> int:
    """Total bytes of the pieces of all ranks."""
    return sum(p.tensor.nbytes for pieces in ranks for p in pieces)
