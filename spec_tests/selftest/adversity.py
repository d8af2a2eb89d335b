"""Broken backends whose bug shows only when saves and loads overlap on one location.

Each is modelled on a real bug: cleanup that deletes another save's files (dcp_impl's own
filesystem writer before issue #22), data files named the same in every save (torch's
``__<rank>_<n>.distcp``), and a metadata cache that outlives the checkpoint it describes.
Family: adversity (``test_two_concurrent_savers``, ``test_load_during_save``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
import re
import threading
from typing import Any, ClassVar

from fsspec.core import url_to_fs
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from dcp_impl.metadata import ItemLocation
from spec_tests.selftest.wrap import Wrapped, WrappedReader, WrappedWriter, done

__all__ = ["CachesMetadataByPath", "FixedDataFileNames", "PrecleansOtherSavesFiles"]

_DATA = re.compile(r"data-[0-9a-f]{32}-r\d+-\d+\.bin")


def _paths(results: list[list[WriteResult]]) -> set[str]:
    return {
        r.storage_data.path
        for rank in results
        for r in rank
        if isinstance(r.storage_data, ItemLocation)
    }


class _Precleaning(WrappedWriter):
    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        # "Remove leftovers of crashed saves before committing, so the folder never grows":
        # every data file this save's results do not name, another live save's included.
        keep = _paths(results)
        fs, root = url_to_fs(self.location)
        fs.invalidate_cache(root)
        for path in fs.find(root):
            name = posixpath.basename(path)
            if _DATA.fullmatch(name) and name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(path)
        self.inner.finish(metadata=metadata, results=results)


class PrecleansOtherSavesFiles(Wrapped):
    """Before committing, deletes every data file its own plan does not name, taking them for
    a crashed save's leftovers: a concurrent save's files (committed or not) go with them.

    Family: adversity (two savers: a save that commits second deletes the first one's
    committed files, then fails itself, and nothing loads).
    """

    base = "dcp_impl-fs"
    writer = _Precleaning
    family = "adversity"


class _FixedNames(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        # "Stable file names, one per rank and file, as torch names them": the fresh file is
        # moved onto the fixed name, replacing whatever an earlier save put there.
        results = self.inner.write_data(plan, planner).wait()
        fs, root = url_to_fs(self.location)
        renamed: dict[str, str] = {}
        for result in results:
            location = result.storage_data
            assert isinstance(location, ItemLocation)
            if location.path not in renamed:
                rank_file = location.path.split("-", 2)[2]  # r<rank>-<k>.bin
                renamed[location.path] = f"data-{'0' * 32}-{rank_file}"
                fs.mv(f"{root}/{location.path}", f"{root}/{renamed[location.path]}")
        return done(
            [
                dataclasses.replace(
                    r,
                    storage_data=dataclasses.replace(
                        r.storage_data, path=renamed[r.storage_data.path]
                    ),
                )
                for r in results
            ]
        )


class FixedDataFileNames(Wrapped):
    """Names its data files the same in every save (one per rank and file, like torch's
    ``__0_0.distcp``): a second save overwrites the data a committed metadata describes.

    Family: adversity (two savers whose writes and commits cross: one save's metadata over
    the other's data).
    """

    base = "dcp_impl-fs"
    writer = _FixedNames
    family = "adversity"


class _Cached(WrappedReader):
    cache: ClassVar[dict[str, Metadata]] = {}
    lock: ClassVar[threading.Lock] = threading.Lock()

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        # "Metadata never changes once written: read it once per path" (shared by every reader).
        with self.lock:
            cached = self.cache.get(self.location)
        if cached is None:
            cached = self.inner.read_metadata(*args, **kwargs)
            with self.lock:
                self.cache[self.location] = cached
        return cached


class CachesMetadataByPath(Wrapped):
    """Caches each location's metadata for the life of the process: after a newer save, loads
    take the old metadata, whose files the newer save removed (or overwrote).

    Family: adversity (after a load during a save, the location must load the new save).
    """

    base = "dcp_impl-fs"
    reader = _Cached
    family = "adversity"
