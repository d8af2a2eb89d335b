"""What the HuggingFace backend's tests share: the harness' backend over dcp_impl's classes,
and sample values of any dtype."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dcp_impl import dtypes
from dcp_impl.huggingface import HuggingFaceReader, HuggingFaceWriter

__all__ = ["Backend", "sample"]


class Backend:
    """The harness' backend protocol over our classes (writers/readers also given explicitly)."""

    name = "dcp_impl-hf"
    capabilities: frozenset[str] | None = None

    def __init__(self, **writer_kwargs: Any) -> None:
        self.writer_kwargs = {"sync_files": False, **writer_kwargs}

    def make_writer(self, path: str) -> HuggingFaceWriter:
        return HuggingFaceWriter(path, **self.writer_kwargs)

    def make_reader(self, path: str) -> HuggingFaceReader:
        return HuggingFaceReader(path)


def sample(dtype: torch.dtype, shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Deterministic values of any dtype, every bit pattern allowed (NaN payloads, -0.0)."""
    gen = torch.Generator().manual_seed(seed)
    nbytes = int(torch.Size(shape).numel()) * dtypes.by_torch(dtype).itemsize
    raw = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=gen)
    if dtype == torch.bool:
        raw = raw % 2
    return raw.view(dtype).reshape(shape)
