"""What an unpickled bytes entry holds in memory, bounded: :func:`footprint`.

:mod:`dcp_impl.safe_load` walks every object a checked entry unpickled into, to refuse
numpy object arrays (they hold arbitrary objects) and entries whose objects take far more
memory than their stored bytes (an expansion bomb: a few hundred bytes of pickle can declare
a tensor of gigabytes). Each object is counted once, however often it is referenced.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["Footprint", "footprint"]


class Footprint(Exception):
    """The walk stopped: ``reason`` says why (over the limit, or an object array at ``path``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def footprint(obj: object, limit: int) -> int:
    """Bytes of memory ``obj`` and everything it references hold; raises :class:`Footprint`
    at the first numpy object array, or once the count passes ``limit``."""
    seen: set[int] = set()
    storages: set[tuple[str, int]] = set()
    pending: list[tuple[object, str]] = [(obj, "$")]
    total = 0
    while pending:
        value, where = pending.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        size, children = _own(value, where, storages)
        total += size
        if total > limit:
            raise Footprint(f"its objects take more than {limit} bytes (at {where})")
        pending.extend(children)
    return total


def _own(value: Any, where: str, storages: set[tuple[str, int]]) -> tuple[int, list[Any]]:
    """``value``'s own bytes and the objects it references (each with its path)."""
    if isinstance(value, torch.Tensor):
        return _tensor(value, where, storages)
    kind = type(value).__module__.split(".")[0]
    if kind == "numpy":
        return _numpy(value, where)
    size = sys.getsizeof(value)
    if isinstance(value, io.BytesIO):
        return size + value.getbuffer().nbytes, []
    if isinstance(value, dict):
        return size, [(v, f"{where}[{k!r:.40}]") for k, v in value.items()] + [
            (k, f"{where} key") for k in value
        ]
    if isinstance(value, list | tuple | set | frozenset):
        return size, [(v, f"{where}[{i}]") for i, v in enumerate(value)]
    state = getattr(value, "__dict__", None)  # an allow-listed user type
    return size, [] if state is None else [(state, f"{where}.__dict__")]


def _tensor(
    value: torch.Tensor, where: str, storages: set[tuple[str, int]]
) -> tuple[int, list[Any]]:
    if value.layout != torch.strided:  # sparse: what its index and value tensors hold
        return sys.getsizeof(value), [(part, f"{where} part") for part in _sparse_parts(value)]
    storage = value.untyped_storage()
    key = (str(storage.device), storage.data_ptr())
    if storage.nbytes() and key in storages:
        return sys.getsizeof(value), []
    storages.add(key)
    return sys.getsizeof(value) + storage.nbytes(), []


def _sparse_parts(value: torch.Tensor) -> Iterator[torch.Tensor]:
    if value.layout == torch.sparse_coo:
        yield value._indices()
        yield value._values()
        return
    compressed = value.layout in (torch.sparse_csr, torch.sparse_bsr)
    yield value.crow_indices() if compressed else value.ccol_indices()
    yield value.col_indices() if compressed else value.row_indices()
    yield value.values()


def _numpy(value: Any, where: str) -> tuple[int, list[Any]]:
    dtype = getattr(value, "dtype", None)
    if dtype is not None and dtype.hasobject:
        raise Footprint(f"a numpy array of dtype {dtype} holds Python objects (at {where})")
    # An array that owns its data counts it in its own size already; a view does not.
    return max(sys.getsizeof(value), int(getattr(value, "nbytes", 0))), []
