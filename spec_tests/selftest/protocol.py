"""Broken backends that break DCP's call contract or how a save commits.

Each backend's docstring says what it breaks and which property family must reject it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from collections import OrderedDict
from typing import Any

from fsspec.core import url_to_fs
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from spec_tests.selftest.wrap import Wrapped, WrappedReader, WrappedWriter

__all__ = [
    "CaseInsensitiveKeys",
    "ClearsLocationFirst",
    "CoordinatorResultsOnly",
    "IgnoresReset",
    "KeepsOldEntries",
    "KeepsUnrewrittenChunks",
    "ProcessLocalResults",
    "RejectsExtraKwargs",
    "ValidateRaises",
]

# --- the call contract ---------------------------------------------------------------------------


class _StickyWriter(WrappedWriter):
    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        self.inner.reset(None, **kwargs)  # new ids for the next save, but the same location


class _StickyReader(WrappedReader):
    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        self.inner.reset(None, **kwargs)


class IgnoresReset(Wrapped):
    """reset(checkpoint_id) keeps the location the writer/reader was made for.

    Family: contract (``reset`` retargets).
    """

    writer = _StickyWriter
    reader = _StickyReader
    family = "contract"


class _StrictIdWriter(WrappedWriter):
    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return super().validate_checkpoint_id(os.fspath(checkpoint_id))  # TypeError for non-paths


class _StrictIdReader(WrappedReader):
    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return super().validate_checkpoint_id(os.fspath(checkpoint_id))


class ValidateRaises(Wrapped):
    """validate_checkpoint_id raises TypeError for anything that is not a path (torch-fs's bug).

    Family: contract (``validate_checkpoint_id`` is total).
    """

    base = "dcp_impl-fs"
    writer = _StrictIdWriter
    reader = _StrictIdReader
    family = "contract"


_KNOWN = frozenset({"rank", "use_collectives"})


def _refuse_unknown(method: str, kwargs: dict[str, Any]) -> None:
    unknown = sorted(set(kwargs) - _KNOWN)
    if unknown:
        raise TypeError(f"{method}() got unexpected keyword arguments {unknown}")


class _StrictKwargsWriter(WrappedWriter):
    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        _refuse_unknown("set_up_storage_writer", kwargs)
        super().set_up_storage_writer(is_coordinator, *args, **kwargs)


class _StrictKwargsReader(WrappedReader):
    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        _refuse_unknown("read_metadata", kwargs)
        return super().read_metadata(*args, **kwargs)


class RejectsExtraKwargs(Wrapped):
    """Declares ``**kwargs`` but raises TypeError for keywords it does not know.

    Family: contract (extra keywords a newer torch passes are accepted).
    """

    writer = _StrictKwargsWriter
    reader = _StrictKwargsReader
    family = "contract"


class _CaseInsensitive(WrappedWriter):
    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        # Keys of the store are case-insensitive: the last write of "W" or "w" is both.
        last: dict[tuple[str, tuple[int, ...] | None], WriteResult] = {}
        flat = [r for rank in results for r in rank]
        for result in flat:
            last[result.index.fqn.casefold(), _at(result)] = result
        merged = [
            dataclasses.replace(result, storage_data=last[fqn.casefold(), _at(result)].storage_data)
            for result in flat
            for fqn in [result.index.fqn]
        ]
        super().finish(metadata, [merged])


class CaseInsensitiveKeys(Wrapped):
    """Stores items under case-insensitive keys: entries "W" and "w" share the last one saved.

    Family: roundtrip (names that differ only in case, normalisation or separators).
    """

    writer = _CaseInsensitive
    family = "roundtrip"


# --- committing ----------------------------------------------------------------------------------


class _ClearFirst(WrappedWriter):
    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if is_coordinator:  # "start from a clean directory"
            fs, root = url_to_fs(self.location)
            with contextlib.suppress(FileNotFoundError):
                fs.rm(fs.find(root))
        super().set_up_storage_writer(is_coordinator, *args, **kwargs)


class ClearsLocationFirst(Wrapped):
    """Claims ``atomic-commit`` but empties the location when a save starts.

    A save killed after that leaves no checkpoint at all. Family: faults (killed saves).
    """

    base = "dcp_impl-fs"
    writer = _ClearFirst
    family = "faults"


class _CoordinatorOnly(WrappedWriter):
    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        super().finish(metadata, results[:1])  # meant results[0] "for this rank"


class CoordinatorResultsOnly(Wrapped):
    """finish keeps only the coordinator's WriteResults: other ranks' items are not recorded.

    Family: resharding (multi-rank saves).
    """

    writer = _CoordinatorOnly
    family = "resharding"


# Results this process wrote, per location: what the broken finish below uses.
_WRITTEN: dict[str, list[WriteResult]] = {}


class _ProcessLocal(WrappedWriter):
    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if is_coordinator:
            _WRITTEN[self.location] = []
        super().set_up_storage_writer(is_coordinator, *args, **kwargs)

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        future = super().write_data(plan, planner)
        _WRITTEN.setdefault(self.location, []).extend(future.wait())
        return future

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        # Every rank's results are here when the ranks share a process, as simulated ranks do.
        super().finish(metadata, [_WRITTEN.pop(self.location, [])])


class ProcessLocalResults(Wrapped):
    """finish records the results written in its own process instead of the gathered ones.

    Right while the ranks share a process; with real processes it loses every other rank's
    items. Family: multiprocess.
    """

    base = "dcp_impl-fs"
    writer = _ProcessLocal
    family = "multiprocess"


# The last save per location (two locations at most: a property's two saves share one).
_PREVIOUS: OrderedDict[str, tuple[Metadata, list[WriteResult]]] = OrderedDict()


def _remember(location: str, metadata: Metadata, results: list[WriteResult]) -> None:
    _PREVIOUS[location] = (copy.deepcopy(metadata), results)
    _PREVIOUS.move_to_end(location)
    while len(_PREVIOUS) > 2:
        _PREVIOUS.popitem(last=False)


class _KeepsChunks(WrappedWriter):
    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        flat = [r for rank in results for r in rank]
        old_md, old_results = _PREVIOUS.get(self.location, (None, []))
        for fqn, entry in metadata.state_dict_metadata.items():
            old = None if old_md is None else old_md.state_dict_metadata.get(fqn)
            if not (
                isinstance(entry, TensorStorageMetadata)
                and isinstance(old, TensorStorageMetadata)
                and (old.size, old.properties.dtype) == (entry.size, entry.properties.dtype)
            ):
                continue
            # "Incremental": chunks the new save did not rewrite are kept from the last one.
            rewritten = {tuple(c.offsets) for c in entry.chunks}
            kept = [c for c in old.chunks if tuple(c.offsets) not in rewritten]
            entry.chunks = [*entry.chunks, *kept]
            offsets = {tuple(c.offsets) for c in kept}
            flat += [r for r in old_results if r.index.fqn == fqn and _at(r) in offsets]
        _remember(self.location, metadata, flat)
        super().finish(metadata, [flat])


def _at(result: WriteResult) -> tuple[int, ...] | None:
    offset = result.index.offset
    return None if offset is None else tuple(offset)


class KeepsUnrewrittenChunks(Wrapped):
    """An "incremental" overwrite: chunks of the last save the new one did not rewrite stay.

    A reader then mixes the earlier save's rows into the new tensor. Family: faults (stale
    data of an earlier save is never read).
    """

    writer = _KeepsChunks
    family = "faults"


class _KeepsEntries(WrappedWriter):
    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        flat = [r for rank in results for r in rank]
        old_md, old_results = _PREVIOUS.get(self.location, (None, []))
        if old_md is not None:
            # The old metadata is updated with the new entries instead of replaced by them.
            gone = set(old_md.state_dict_metadata) - set(metadata.state_dict_metadata)
            for fqn in gone:
                metadata.state_dict_metadata[fqn] = old_md.state_dict_metadata[fqn]
            flat += [r for r in old_results if r.index.fqn in gone]
        _remember(self.location, metadata, flat)
        super().finish(metadata, [flat])


class KeepsOldEntries(Wrapped):
    """An overwrite merges the new metadata into the old: entries only the old save had stay.

    Family: contract (an overwrite replaces the checkpoint).
    """

    base = "dcp_impl-fs"
    writer = _KeepsEntries
    family = "contract"
