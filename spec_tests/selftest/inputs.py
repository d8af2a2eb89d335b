"""Broken backends that only the suite's input space finds: many entries, views of every kind,
storage shared by entries, long tensors cut into many chunks, storage_meta, a writer reused.

Each backend's docstring says what it breaks and which property family must reject it.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import os
import pickle
import uuid
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.planner import (
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    WriteItem,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from spec_tests.backends import builtin
from spec_tests.selftest.wrap import (
    LoadPlannerProxy,
    SavePlannerProxy,
    Wrapped,
    WrappedReader,
    WrappedWriter,
    done,
    planner_with,
)
from spec_tests.sim.harness import bytes_of

__all__ = [
    "ChunksPairedByName",
    "PlansInTextOrder",
    "DedupsByStorage",
    "IgnoresConjNegBits",
    "ResetDropsOptions",
    "SaveIdAtConstruction",
    "SaveIdFromLocation",
    "ShortHashKeys",
    "StorageFromItsStart",
    "UnknownClassesAsDicts",
]


# --- views whose storage is not their values ----------------------------------------------------


class _FromStorageStart(SavePlannerProxy):
    def resolve_data(self, write_item: WriteItem) -> Any:
        data = self.inner.resolve_data(write_item)
        if not isinstance(data, torch.Tensor) or not data.is_contiguous() or not data.numel():
            return data
        # "Zero copy": a contiguous tensor is its storage, so hand the storage over as it is.
        whole = torch.empty(0, dtype=data.dtype)
        return whole.set_(data.untyped_storage(), 0, data.shape, data.stride())


class StorageFromItsStart(Wrapped):
    """Writes a contiguous tensor as its storage's bytes from the start, ignoring the storage
    offset: right for a tensor that owns its storage, wrong for ``qkv[1]`` or ``buf[3:9]``.

    Family: roundtrip (view kinds with a storage offset, fused weights).
    """

    base = "dcp_impl-fs"
    writer = planner_with(_FromStorageStart)
    family = "roundtrip"


class _RawMemory(SavePlannerProxy):
    def resolve_data(self, write_item: WriteItem) -> Any:
        data = self.inner.resolve_data(write_item)
        if not isinstance(data, torch.Tensor):
            return data
        # memcpy from data_ptr(): the conj and neg bits are metadata, not memory. Applying
        # them a second time clears them over the same memory.
        if data.is_conj():
            data = data.conj()
        if data.is_neg():
            data = torch._neg_view(data)
        return data


class IgnoresConjNegBits(Wrapped):
    """Copies a contiguous tensor's memory from ``data_ptr()``: a conjugated or negated view
    (``x.conj()``, ``torch._neg_view``) is contiguous, and its memory lacks the lazy bit.

    Family: roundtrip (the conj and neg view kinds).
    """

    base = "dcp_impl-fs"
    writer = planner_with(_RawMemory)
    family = "roundtrip"


class _CachedPlanner(SavePlannerProxy):
    def __init__(self, inner: SavePlanner, cache: dict[Any, Any]) -> None:
        super().__init__(inner)
        self.cache = cache

    def resolve_data(self, write_item: WriteItem) -> Any:
        return self.cache[write_item.index]


class _DedupWriter(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        cache = {item.index: planner.resolve_data(item) for item in plan.items}
        first: dict[tuple[int, torch.dtype], WriteItem] = {}
        copies: list[tuple[WriteItem, WriteItem]] = []
        for item in plan.items:
            data = cache[item.index]
            if not isinstance(data, torch.Tensor) or not data.numel():
                continue
            key = (data.untyped_storage().data_ptr(), data.dtype)  # "the same tensor"
            if key in first:
                copies.append((item, first[key]))
            else:
                first[key] = item
        dropped = {item.index for item, _ in copies}
        kept = [i for i in plan.items if i.index not in dropped]
        written = self.inner.write_data(
            dataclasses.replace(plan, items=kept), _CachedPlanner(planner, cache)
        ).wait()
        by_index = {r.index: r for r in written}
        extra = [dataclasses.replace(by_index[src.index], index=item.index) for item, src in copies]
        return done(written + extra)


class DedupsByStorage(Wrapped):
    """Writes each storage once ("tied weights are one tensor"): entries whose tensors share a
    storage point at the first one's bytes, right for tied weights, wrong for the q/k/v slices
    of a fused projection or two windows of one buffer.

    Family: roundtrip (entries sharing a storage).
    """

    base = "dcp_impl-fs"
    writer = _DedupWriter
    family = "roundtrip"


# --- many entries, many chunks ------------------------------------------------------------------


def _short_key(item_index: Any) -> str:
    # Object keys spread over 65,536 prefixes, as object stores recommend for request rates.
    text = f"{item_index.fqn}@{item_index.offset}".encode()
    return hashlib.md5(text, usedforsecurity=False).hexdigest()[:4]


class _HashKeyed(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        written = self.inner.write_data(plan, self.save_planner(planner)).wait()
        objects: dict[str, Any] = {}
        for result in written:  # a later item with the same key replaces the earlier object
            objects[_short_key(result.index)] = result.storage_data
        return done(
            [dataclasses.replace(r, storage_data=objects[_short_key(r.index)]) for r in written]
        )


class ShortHashKeys(Wrapped):
    """Stores each item under a 16-bit hash of its name: with a few hundred entries two names
    share a key now and then, and the later item's bytes replace the earlier one's.

    Family: roundtrip (1,100 entries on one rank).
    """

    base = "dcp_impl-fs"
    writer = _HashKeyed
    family = "roundtrip"


def _name_of(offsets: Any) -> str:
    return "_".join(str(o) for o in offsets)


class _PairedByName(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        written = self.inner.write_data(plan, self.save_planner(planner)).wait()
        chunks: dict[str, list[WriteResult]] = collections.defaultdict(list)
        for result in written:
            if result.index.offset is not None:
                chunks[result.index.fqn].append(result)
        stored: dict[int, Any] = {}
        for results in chunks.values():
            # The chunk objects are listed in name order; the chunks are taken in offset order.
            listed = sorted(results, key=lambda r: _name_of(r.index.offset))
            ordered = sorted(results, key=lambda r: tuple(r.index.offset or ()))
            stored.update({id(c): o.storage_data for c, o in zip(ordered, listed, strict=True)})
        return done(
            [
                dataclasses.replace(r, storage_data=stored.get(id(r), r.storage_data))
                for r in written
            ]
        )


class ChunksPairedByName(Wrapped):
    """Names each chunk's stored object by its offsets ("0_0", "9_0", "10_0") and pairs a
    tensor's chunks with the objects in name order: right while every offset has one digit,
    wrong once "10_0" sorts before "9_0".

    Family: resharding (chunk offsets of every digit count).
    """

    base = "dcp_impl-fs"
    writer = _PairedByName
    family = "resharding"


# --- storage_meta and a writer reused through reset ---------------------------------------------


class _TextOrdered(WrappedWriter):
    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        # "A stable order for the coordinator's work": the plans sorted by rank as text, and
        # handed back in that order, so from 10 ranks on, rank 2 is given rank 10's plan.
        order = sorted(range(len(plans)), key=str)
        return self.inner.prepare_global_plan([plans[rank] for rank in order])


class PlansInTextOrder(Wrapped):
    """Returns the global plan's per-rank plans sorted by rank number as text.

    Up to 10 ranks the text order is the numeric one; from rank 10 on, ranks get each other's
    plans. Family: resharding (12 ranks, rank numbers of two digits).
    """

    base = "dcp_impl-fs"
    writer = _TextOrdered
    family = "resharding"


class _IdAtConstruction(WrappedWriter):
    def __init__(self, inner: StorageWriter, location: str) -> None:
        super().__init__(inner, location)
        self.save_id = uuid.uuid4().hex  # made once, with the writer

    def storage_meta(self) -> StorageMeta | None:
        # docstring inherited
        return StorageMeta(checkpoint_id=self.location, save_id=self.save_id)


class SaveIdAtConstruction(Wrapped):
    """Makes its save_id when the writer is built, not on reset: a writer reused for the next
    checkpoint (``dcp.save(..., storage_writer=w, checkpoint_id=next)``) reports the same id.

    Family: configuration (a writer reset to a new location; storage_meta is checked on every
    save).
    """

    base = "dcp_impl-fs"
    writer = _IdAtConstruction
    family = "configuration"


class _IdFromLocation(WrappedWriter):
    def storage_meta(self) -> StorageMeta | None:
        # docstring inherited
        save_id = uuid.uuid5(uuid.NAMESPACE_URL, self.location).hex  # "idempotent" ids
        return StorageMeta(checkpoint_id=self.location, save_id=save_id)


class SaveIdFromLocation(Wrapped):
    """Derives its save_id from the location, so a second save to the same location (an
    overwrite, a retry) reports the first save's id.

    Family: contract (overwrites; storage_meta is checked on every save).
    """

    base = "dcp_impl-fs"
    writer = _IdFromLocation
    family = "contract"


class _ReinitOnNewLocation(WrappedWriter):
    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        # docstring inherited
        if checkpoint_id is not None and os.fspath(checkpoint_id) != self.location:
            # "A new location is a new writer": rebuilt with the path alone, options forgotten.
            rebuild: Any = type(self.inner)
            self.inner = rebuild(os.fspath(checkpoint_id))
        super().reset(checkpoint_id, **kwargs)


class ResetDropsOptions(Wrapped):
    """``dcp_impl-fs`` built with ``thread_count=4`` whose writer, reset to a location other
    than its own, rebuilds itself from the path alone: the next checkpoint is written with the
    default options (one file per rank instead of one per writer thread).

    Family: configuration (a writer reset to a new location saves as a fresh one).
    """

    base = "dcp_impl-fs"
    writer = _ReinitOnNewLocation
    family = "configuration"

    def inner_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        return builtin("dcp_impl-fs-threads").make_writer(path)


# --- objects beyond weights_only ----------------------------------------------------------------


class _Opaque:
    """What the "safe" unpickler builds for any class it does not know: its arguments and state."""

    def __init__(self, *args: Any) -> None:
        self.args = [a for a in args if not isinstance(a, type)]
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _plain(value: Any) -> Any:
    if isinstance(value, _Opaque):
        return _plain(value.state) if value.state is not None else _plain(value.args)
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _OpaqueUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in {"torch", "collections"} or module == "builtins":
            return super().find_class(module, name)
        return _Opaque


class _OpaquePickle:
    """A pickle module for ``torch.load`` whose unpickler never imports user classes."""

    Unpickler = _OpaqueUnpickler
    load = staticmethod(pickle.load)


class _DictsForUnknown(LoadPlannerProxy):
    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        value.seek(0)
        raw = value.read()
        try:
            torch.load(io.BytesIO(raw), weights_only=True)
        except Exception:
            # "Never fail a load over an optimizer's odd object": keep its data, not its class.
            loaded = torch.load(io.BytesIO(raw), weights_only=False, pickle_module=_OpaquePickle)
            self.inner.load_bytes(read_item, io.BytesIO(bytes_of(_plain(loaded)).getvalue()))
            return
        self.inner.load_bytes(read_item, io.BytesIO(raw))


class _DictsReader(WrappedReader):
    def load_planner(self, planner: LoadPlanner) -> LoadPlanner:
        # docstring inherited
        return _DictsForUnknown(planner)


class UnknownClassesAsDicts(Wrapped):
    """Claims ``safe-load`` and never runs a stored object's code, but loads an object of a
    class it does not allow as plain data (a dataclass as the dict of its fields, a datetime
    as its pickled arguments) instead of raising.

    Family: roundtrip (legitimate objects that are not weights_only-safe: exact or raise).
    """

    base = "dcp_impl-fs"
    reader = _DictsReader
    family = "roundtrip"

    def inner_reader(self, path: str) -> StorageReader:
        # docstring inherited
        return self.inner_trusting_reader(path)
