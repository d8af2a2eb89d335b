"""torch's storage-class options that dcp_impl accepts by name and position, checked in one
place, and the async_save staging that torch's FileSystemWriter provides (BlockingStaging).

The rule (docs/migrating.md): an option passed with torch's default value is accepted; any
other value either works with torch's meaning or raises here, at construction, before
anything is written. Unknown options need no code: the constructors take no ``**kwargs``,
so Python raises ``TypeError`` for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.distributed._shard.sharded_tensor.api import ShardedTensor
from torch.distributed.checkpoint.filesystem import SerializationFormat
from torch.distributed.checkpoint.staging import BlockingAsyncStager
from torch.distributed.tensor import DTensor

from dcp_impl.dtypes import copy_bits
from dcp_impl.errors import UnsupportedError

__all__ = [
    "BlockingStaging",
    "check_count",
    "check_copy_ahead",
    "check_extension_registry",
    "check_extensions",
    "check_serialization_format",
]


def check_count(owner: str, name: str, value: int) -> None:
    """Refuse a thread count that is not an int >= 1."""
    if type(value) is not int or value < 1:
        raise ValueError(f"{owner}: {name} expected an int >= 1, got {value!r}")


def check_copy_ahead(owner: str, value: int) -> None:
    """``per_thread_copy_ahead`` bounds the bytes copied off a device ahead of their write.

    dcp_impl copies each device tensor to host only when its write starts, never ahead, so
    every bound is kept; only a value that bounds nothing is refused.
    """
    if type(value) is not int or value < 0:
        raise ValueError(f"{owner}: per_thread_copy_ahead expected an int >= 0, got {value!r}")


class BlockingStaging:
    """``dcp.async_save``'s AsyncStager protocol as torch's ``FileSystemWriter`` provides it: a
    blocking copy of the state dict to CPU, kept in (pinned, where CUDA is) buffers between
    saves with ``cache_staged_state_dict``.

    Plain tensors are copied bit for bit by dcp_impl (:func:`dcp_impl.dtypes.copy_bits`), so
    staging copies whatever a save can store: torch's own staging cannot make a 0-d tensor of
    a bits or float4 dtype (docs/known-bugs.md). A DTensor or ShardedTensor is staged by torch's
    ``BlockingAsyncStager``, which knows their layouts; other values pass as they are, as
    torch's do. A subclass calls :meth:`_set_up_staging` from its constructor.
    """

    # A member of torch's AsyncStager protocol, which isinstance() checks for.
    _synchronize_after_execute: bool = False

    def _set_up_staging(self, cache_staged_state_dict: bool) -> None:
        self.cache_staged_state_dict = cache_staged_state_dict
        # The staged buffers by their key path, reused while shape and dtype match.
        self._staged: dict[tuple[object, ...], torch.Tensor] = {}

    @property
    def should_synchronize_after_execute(self) -> bool:
        """Whether ``async_save`` calls :meth:`synchronize_staging` after saving (never)."""
        return self._synchronize_after_execute

    def stage(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """A CPU copy of ``state_dict`` for ``async_save`` to write while training goes on."""
        staged: dict[str, Any] = self._stage(state_dict, ())
        return staged

    def synchronize_staging(self) -> None:
        """Nothing to wait for: staging blocks."""

    def close(self) -> None:
        """Release the staging cache."""
        self._staged.clear()

    def _stage(self, value: Any, path: tuple[object, ...]) -> Any:
        if isinstance(value, DTensor | ShardedTensor):
            return BlockingAsyncStager().stage({"value": value})["value"]
        if isinstance(value, torch.Tensor):
            return self._copy(value, path)
        if isinstance(value, dict):
            return {k: self._stage(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            items = [self._stage(v, (*path, i)) for i, v in enumerate(value)]
            return items if isinstance(value, list) else type(value)(items)
        return value

    def _copy(self, tensor: torch.Tensor, path: tuple[object, ...]) -> torch.Tensor:
        out = self._staged.get(path) if self.cache_staged_state_dict else None
        if out is None or out.shape != tensor.shape or out.dtype != tensor.dtype:
            out = torch.empty(
                tensor.shape,
                dtype=tensor.dtype,
                pin_memory=self.cache_staged_state_dict and torch.cuda.is_available(),
            )
            if self.cache_staged_state_dict:
                self._staged[path] = out
        copy_bits(out, tensor)
        return out


def check_extensions(owner: str, extensions: Sequence[object] | None) -> None:
    """Stream transforms (torch's ``_extensions``, e.g. ZStandard) are refused.

    Reads go straight into the destination by byte range, and checksums cover stored bytes
    that are the tensor's own; a transformed stream allows neither (docs/migrating.md).
    """
    if extensions:
        names = ", ".join(type(ext).__name__ for ext in extensions)
        raise UnsupportedError(
            f"{owner}: _extensions are not supported: expected None or [], got [{names}] "
            "(stored bytes are the tensors' own, read by byte range; see docs/migrating.md)"
        )


def check_extension_registry(owner: str, registry: object | None) -> None:
    """A registry decodes stream transforms, which no dcp_impl checkpoint carries."""
    if registry is not None:
        raise UnsupportedError(
            f"{owner}: _extension_registry is not supported: expected None, got "
            f"{type(registry).__name__} (dcp_impl checkpoints carry no stream transforms)"
        )


def check_serialization_format(owner: str, value: SerializationFormat) -> None:
    """torch's default (TORCH_SAVE) is accepted; SAFETENSORS is what HuggingFaceWriter does."""
    if value != SerializationFormat.TORCH_SAVE:
        raise UnsupportedError(
            f"{owner}: serialization_format expected SerializationFormat.TORCH_SAVE (the "
            f"default), got {value!r}; for safetensors files use dcp_impl.HuggingFaceWriter"
        )
