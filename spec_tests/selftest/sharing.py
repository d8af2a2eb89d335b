"""Broken backends whose bug is in shared reads (``share_reads``): ranks of one host taking
stored items from each other instead of from storage.

Each backend's docstring says what it breaks and which property family must reject it.
"""

from __future__ import annotations

import dataclasses

from torch.distributed.checkpoint.planner import LoadPlan
from torch.distributed.checkpoint.storage import StorageReader

from dcp_impl.filesystem import FileSystemReader
from dcp_impl.transfer import SharePlan
from spec_tests.selftest.wrap import Wrapped, WrappedReader

__all__ = ["SharesChunksByName"]


class _ByName(WrappedReader):
    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        # docstring inherited
        plans = self.inner.prepare_global_plan(plans)
        first: dict[str, tuple[int, int]] = {}  # "the tensor's bytes": keyed by name only
        for plan in plans:
            if isinstance(plan.storage_data, SharePlan):
                for index, slot in plan.storage_data.owners.items():
                    first.setdefault(index.fqn, slot)
        return [_renamed(plan, first) for plan in plans]


def _renamed(plan: LoadPlan, first: dict[str, tuple[int, int]]) -> LoadPlan:
    share = plan.storage_data
    if not isinstance(share, SharePlan):
        return plan
    owners = {index: first[index.fqn] for index in share.owners}
    return dataclasses.replace(plan, storage_data=dataclasses.replace(share, owners=owners))


class SharesChunksByName(Wrapped):
    """Shares reads between ranks keyed by tensor name, not by stored chunk (a cache keyed
    by ``fqn``): ranks that need different chunks of one tensor all take one of them.

    Family: resharding (a load into another layout must give every rank its own values).
    """

    base = "dcp_impl-fs"
    reader = _ByName
    family = "resharding"

    def inner_reader(self, path: str) -> StorageReader:
        """dcp_impl-fs's reader with shared reads on (``dcp_impl-fs-shared-reads``'s)."""
        return FileSystemReader(path, share_reads="shm")
