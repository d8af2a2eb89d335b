"""Broken backends that only the suite's soundness rules catch (docs/conformance.md section 3).

Each hides its bug behind something an earlier version of the suite took for a pass: a
load failure after a successful save counted as a "refusal", a hostile entry loaded as a
stand-in, a named edge case left to the draw, a harness verdict taken for detected damage.
Each backend's docstring says what it breaks and which property family must reject it.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from dcp_impl.errors import UnsafeCheckpointError
from spec_tests.selftest.wrap import Wrapped, WrappedReader, WrappedWriter

__all__ = [
    "CommitsNothingForNoItems",
    "LoadsUnsafeEntriesAsNone",
    "SavesDtypesItCannotLoad",
    "ValidateRaisesOnURLs",
]


def _done() -> Future[None]:
    future: Future[None] = Future()
    future.set_result(None)
    return future


# --- committed means loadable ---------------------------------------------------------------------

# The newest dtypes: the writer stores their bytes, but the reader's decoder table predates them.
_NO_DECODER = frozenset({torch.float8_e8m0fnu, torch.float4_e2m1fn_x2})


class _OldDecoderTable(WrappedReader):
    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        # docstring inherited
        self._dtypes = {
            fqn: entry.properties.dtype
            for fqn, entry in metadata.state_dict_metadata.items()
            if isinstance(entry, TensorStorageMetadata)
        }
        super().set_up_storage_reader(metadata, is_coordinator, *args, **kwargs)

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        # docstring inherited
        for item in plan.items:
            dtype = self._dtypes.get(item.storage_index.fqn)
            if dtype in _NO_DECODER:
                raise KeyError(f"no decoder for stored dtype {dtype}")
        return super().read_data(plan, planner)


class SavesDtypesItCannotLoad(Wrapped):
    """Does not claim float8_e8m0fnu or float4_e2m1fn_x2, lets their saves succeed, and then
    cannot load them (KeyError from an old decoder table; torch-hf's F8_E8M0 / F4 bug).

    The claimed tensors saved beside them load. Family: unclaimed (a save it lets succeed
    must load back: a failure at load is "committed but unloadable", not a refusal).
    """

    base = "dcp_impl-fs"
    reader = _OldDecoderTable
    unclaimed = frozenset({"dtype:float8_e8m0fnu", "dtype:float4_e2m1fn_x2"})
    family = "unclaimed"


# --- refused means raised -------------------------------------------------------------------------


class _DegradesGracefully(WrappedReader):
    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        # docstring inherited
        try:
            super().read_data(plan, planner).wait()
        except UnsafeCheckpointError:
            # "Warn and carry on": the tensors load, each refused object loads as None.
            tensors = [i for i in plan.items if i.type != LoadItemType.BYTE_IO]
            super().read_data(dataclasses.replace(plan, items=tensors), planner).wait()
            for item in plan.items:
                if item.type == LoadItemType.BYTE_IO:
                    planner.load_bytes(item, _none())
        return _done()


def _none() -> io.BytesIO:
    """None as DCP stores a non-tensor entry (``torch.save``)."""
    buffer = io.BytesIO()
    torch.save(None, buffer)
    buffer.seek(0)
    return buffer


class LoadsUnsafeEntriesAsNone(Wrapped):
    """Refuses an unsafe non-tensor entry by loading None in its place, so the rest of the
    checkpoint still loads ("degrade gracefully" instead of raising).

    Nothing unsafe runs, but the entry loads as a stand-in. Family: hostile (refused means
    raised).
    """

    base = "dcp_impl-fs"
    reader = _DegradesGracefully
    family = "hostile"


# --- named inputs are always tried ---------------------------------------------------------------


def _refuse_urls(checkpoint_id: object) -> None:
    if isinstance(checkpoint_id, str | os.PathLike) and "://" in os.fspath(checkpoint_id):
        raise ValueError(f"checkpoint id {checkpoint_id!r}: this backend takes local paths")


class _LocalOnlyWriter(WrappedWriter):
    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        # docstring inherited
        _refuse_urls(checkpoint_id)
        return super().validate_checkpoint_id(checkpoint_id)


class _LocalOnlyReader(WrappedReader):
    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        # docstring inherited
        _refuse_urls(checkpoint_id)
        return super().validate_checkpoint_id(checkpoint_id)


class ValidateRaisesOnURLs(Wrapped):
    """validate_checkpoint_id raises a "helpful" ValueError for URLs instead of returning False.

    dcp.save asks every registered backend whether a URL is theirs: a raise there breaks
    every other backend's saves. Family: contract (validate_checkpoint_id is total; the
    URL is a named case, so every run tries it).
    """

    base = "dcp_impl-fs"
    writer = _LocalOnlyWriter
    reader = _LocalOnlyReader
    family = "contract"


class _NothingToCommit(WrappedWriter):
    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        # "No items were written, so there is nothing to commit."
        if any(results):
            super().finish(metadata, results)


class CommitsNothingForNoItems(Wrapped):
    """A save of an empty state dict succeeds and commits no metadata: its load then fails.

    Committed means loadable: an optimizer before its first step, or a rank's empty shard
    of everything, is a state a job saves. Family: roundtrip (checkpoints without tensor
    bytes).
    """

    base = "dcp_impl-fs"
    writer = _NothingToCommit
    family = "roundtrip"
