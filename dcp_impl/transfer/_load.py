"""The read pipeline of a DCP ``StorageReader.read_data``: ReadItems -> requests -> commits.

Both of dcp_impl's readers are this pipeline plus a way to find a stored item (their
``locate``): :func:`read_items` gives every ReadItem a destination (the planner's tensor, or a
buffer for a BYTE_IO item), groups them into one :class:`ReadRequest` per stored item, has
them read (``Store.read``: straight into the destinations, only the bytes they need), then
hands the bytes entries to ``deliver_bytes`` (by default :func:`checked_bytes`: each must load
under ``torch.load(weights_only=True)`` rules, :mod:`dcp_impl.safe_load`) and each tensor to the
planner, in plan order.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlanner, ReadItem

from dcp_impl import safe_load
from dcp_impl.errors import CorruptCheckpointError, LayoutMismatchError
from dcp_impl.layout import Box
from dcp_impl.transfer._budget import check_max_inflight
from dcp_impl.transfer._requests import ReadRequest, Target

__all__ = [
    "StoredItem",
    "Locate",
    "RequestReader",
    "BytesSink",
    "Verify",
    "checked_bytes",
    "read_items",
]

Verify = bool | Literal["whole"]
"""Which checksums a load checks: all (True: each piece a read touches), none (False), or
``"whole"``: those of items some destination takes whole (a partial read then fetches only
its byte ranges)."""


@dataclass(frozen=True, slots=True)
class StoredItem:
    """Where one stored item is: a row-major chunk of ``chunk_sizes`` and ``dtype`` at bytes
    ``[offset, offset + length)`` of ``path``, with its checksum (None: none stored) and a
    ``label`` naming it in error messages. A BYTE_IO item is a uint8 chunk of its length."""

    path: str
    offset: int
    length: int
    chunk_sizes: tuple[int, ...]
    dtype: torch.dtype
    checksum: str | None = None
    label: str = ""

    def request(self, targets: tuple[Target, ...], *, checksum: bool = True) -> ReadRequest:
        """A read of this item into ``targets``, checking its checksum unless ``checksum``
        is False."""
        return ReadRequest(
            path=self.path,
            offset=self.offset,
            length=self.length,
            chunk_sizes=self.chunk_sizes,
            dtype=self.dtype,
            targets=targets,
            checksum=self.checksum if checksum else None,
            label=self.label,
        )


Locate = Callable[[MetadataIndex], StoredItem]
"""Finds the stored item of a ReadItem's ``storage_index``; raises a CheckpointError naming
it when the checkpoint has none."""


BytesSink = Callable[[LoadPlanner, Sequence[tuple[ReadItem, bytes]]], None]
"""Hands a load's bytes entries (each ReadItem and its stored bytes) to the planner."""


def load_bytes(planner: LoadPlanner, entries: Sequence[tuple[ReadItem, bytes]]) -> None:
    """The plain :data:`BytesSink`: ``planner.load_bytes`` for each entry, unchecked (the
    planner's ``torch.load`` runs whatever the bytes ask for: trusted checkpoints only)."""
    for item, raw in entries:
        planner.load_bytes(item, io.BytesIO(raw))


def checked_bytes(planner: LoadPlanner, entries: Sequence[tuple[ReadItem, bytes]]) -> None:
    """The default :data:`BytesSink`: every entry must load under ``torch.load(weights_only=True)``
    rules (:class:`dcp_impl.safe_load.PicklePolicy`'s defaults) before any reaches the planner;
    else ``UnsafeCheckpointError``."""
    safe_load.deliver_bytes(safe_load.PicklePolicy(), planner, entries)


class RequestReader(Protocol):
    """What reads the requests: a :class:`dcp_impl.store.Store`."""

    def read(
        self, requests: Sequence[ReadRequest], *, thread_count: int | None = None, verify: bool
    ) -> None:
        """Fill the targets of ``requests`` (see :func:`~dcp_impl.transfer.read_into`); with a
        cap, also takes ``max_inflight_bytes=`` (as :meth:`dcp_impl.store.Store.read`)."""
        ...


def read_items(
    items: Sequence[ReadItem],
    planner: LoadPlanner,
    locate: Locate,
    reader: RequestReader,
    *,
    thread_count: int | None = None,
    verify: Verify = True,
    deliver_bytes: BytesSink = checked_bytes,
    max_inflight_bytes: int | None = None,
    convert_dtypes: bool = False,
) -> None:
    """Load ``items`` (one rank's LoadPlan) through ``planner``: resolve each destination,
    read every stored item once into all its destinations with ``reader``, then hand the
    bytes entries to ``deliver_bytes`` and ``commit_tensor`` each tensor, in plan order.
    Nothing reaches the planner when a read fails.

    Args:
        items: the ReadItems of ``StorageReader.read_data``'s plan.
        planner: the LoadPlanner that resolves destinations and takes the results.
        locate: finds each item's stored bytes (the backend's knowledge of its format).
        reader: reads the requests (a :class:`dcp_impl.store.Store`).
        thread_count: parallel reads (default: the reader's).
        verify: which checksums are checked (:data:`Verify`).
        deliver_bytes: hands the bytes entries to the planner (default: :func:`checked_bytes`;
            :func:`load_bytes` hands them over unchecked).
        max_inflight_bytes: a cap on the host memory the reads hold in buffers beyond the
            destinations (None: none); passed to ``reader.read`` only when set. Bytes
            entries are destinations here: all are held until delivered together.
        convert_dtypes: let a destination of another dtype than the stored one be filled by
            conversion; by default it raises ``LayoutMismatchError`` before any read.
    """
    check_max_inflight("read_items", max_inflight_bytes)
    stored: dict[MetadataIndex, StoredItem] = {}
    grouped: dict[MetadataIndex, list[Target]] = {}
    byte_items: list[tuple[ReadItem, torch.Tensor]] = []
    tensors: list[tuple[ReadItem, torch.Tensor]] = []
    for item in items:
        key = item.storage_index
        if key not in stored:
            stored[key] = locate(key)
        target = _target(item, stored[key], planner, convert_dtypes)
        grouped.setdefault(key, []).append(target)
        is_bytes = item.type == LoadItemType.BYTE_IO
        (byte_items if is_bytes else tensors).append((item, target.dest))
    requests = [
        stored[key].request(tuple(targets), checksum=_checks(stored[key], targets, verify))
        for key, targets in grouped.items()
    ]
    cap = {} if max_inflight_bytes is None else {"max_inflight_bytes": max_inflight_bytes}
    reader.read(requests, thread_count=thread_count, verify=bool(verify), **cap)
    deliver_bytes(planner, [(item, dest.numpy().tobytes()) for item, dest in byte_items])
    for item, dest in tensors:
        planner.commit_tensor(item, dest)


def _target(
    item: ReadItem, stored: StoredItem, planner: LoadPlanner, convert_dtypes: bool
) -> Target:
    """The destination of ``item``: the planner's tensor region, or a buffer for bytes."""
    if item.type == LoadItemType.BYTE_IO:
        return Target(Box.full(stored.chunk_sizes), _bytes_buffer(stored))
    sub = Box(tuple(item.storage_offsets), tuple(item.lengths))
    dest = planner.resolve_tensor(item).detach()
    if tuple(dest.shape) != sub.sizes:
        raise LayoutMismatchError(
            f"tensor {item.dest_index.fqn!r}: destination region expected shape {sub.sizes}, "
            f"found {tuple(dest.shape)}"
        )
    if dest.dtype != stored.dtype and not convert_dtypes:
        # torch's readers convert here with copy_, silently losing precision when the
        # destination is narrower (pytorch#187138); converting is the caller's decision.
        raise LayoutMismatchError(
            f"tensor {item.dest_index.fqn!r}: destination expected dtype {stored.dtype} (the "
            f"stored one), found {dest.dtype}; a load never converts: load into a "
            f"{stored.dtype} tensor and convert it with .to({dest.dtype}), or pass "
            "convert_dtypes=True"
        )
    return Target(sub, dest)


def _bytes_buffer(stored: StoredItem) -> torch.Tensor:
    """A buffer for a bytes entry of the length the metadata declares; an allocator that
    refuses it (a hostile length) raises a typed error naming the item, not RuntimeError."""
    try:
        return torch.empty(stored.chunk_sizes, dtype=torch.uint8)
    except (RuntimeError, MemoryError) as err:
        raise CorruptCheckpointError(
            f"{stored.path}: bytes item {stored.label} declares {stored.length} bytes: "
            f"expected a length that fits in memory, found the allocation refused ({err})"
        ) from err


def _checks(stored: StoredItem, targets: Sequence[Target], verify: Verify) -> bool:
    """Whether to check ``stored``'s checksum: not where ``"whole"`` would read bytes that
    no destination asked for."""
    if verify != "whole":
        return True
    whole = Box.full(stored.chunk_sizes)
    return any(t.sub == whole for t in targets)
