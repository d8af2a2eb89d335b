"""Planning shared reads: which rank of a host reads each stored item that several ranks need.

A load with ``share_reads="shm"`` marks each rank's local plan with its :class:`HostTag`
(``prepare_local_plan``). The coordinator (``prepare_global_plan``) sees every rank's
ReadItems: per host, each stored item that two or more of its ranks need gets one owner,
the needing rank with the fewest bytes to read so far (largest items first), and each rank's
plan gets a :class:`SharePlan` as its ``storage_data``. Owners read their items from storage
once and publish them in the host's shared memory; the others take them from there
(:class:`dcp_impl.store.SharedReader`).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadPlan

from dcp_impl.errors import InvalidOptionError, UnsupportedError

__all__ = [
    "SHM_ROOT",
    "DEFAULT_SHARE_TIMEOUT",
    "ShareReads",
    "HostTag",
    "SharePlan",
    "check_share_reads",
    "host_tag",
    "mark_host",
    "share_plans",
]

ShareReads = Literal["shm"] | None
"""How a load shares the reads of items several ranks need: None (each rank reads its own)
or ``"shm"`` (once per host, through shared memory)."""

SHM_ROOT = "/dev/shm"
"""Where shared segments live: a memory file system every process of a host sees."""

DEFAULT_SHARE_TIMEOUT = 600.0
"""Seconds a rank waits for an item another rank of its host publishes."""


@dataclass(frozen=True, slots=True)
class HostTag:
    """Which shared memory a rank sees: equal tags, same ``SHM_ROOT`` (host name, boot id
    and the memory file system's device and inode, so containers with their own
    ``/dev/shm`` on one host are told apart)."""

    host: str


@dataclass(frozen=True, slots=True)
class SharePlan:
    """One rank's part in a load's shared reads.

    ``key`` names the host's segment (a folder under :data:`SHM_ROOT`), ``group`` the ranks
    that share it, and ``owners`` maps each shared item this rank needs to
    ``(slot, owner rank)``: the owner reads it from storage and publishes it as file
    ``slot`` of the segment.
    """

    key: str
    rank: int
    group: tuple[int, ...]
    owners: Mapping[MetadataIndex, tuple[int, int]]

    def __post_init__(self) -> None:
        if self.rank not in self.group:
            raise ValueError(f"share plan: rank {self.rank} is not in its group {self.group}")


def check_share_reads(owner: str, value: object, timeout: object) -> None:
    """Refuse a ``share_reads`` other than None or ``"shm"``, a ``share_timeout`` that is not
    a positive number, and ``"shm"`` where the host has no :data:`SHM_ROOT`."""
    if value is not None and value != "shm":
        raise InvalidOptionError(f"{owner}: share_reads expected None or 'shm', got {value!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise InvalidOptionError(
            f"{owner}: share_timeout expected a number of seconds > 0, got {timeout!r}"
        )
    if value == "shm" and not os.path.isdir(SHM_ROOT):
        raise UnsupportedError(
            f"{owner}: share_reads='shm' expected a shared memory folder {SHM_ROOT}, found none"
        )


def host_tag() -> HostTag:
    """This process's :class:`HostTag`."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        boot = "?"
    shm = os.stat(SHM_ROOT)
    return HostTag(f"{socket.gethostname()}|{boot}|{shm.st_dev}:{shm.st_ino}")


def mark_host(plan: LoadPlan) -> LoadPlan:
    """``plan`` with this rank's :class:`HostTag` as its ``storage_data`` (for the coordinator)."""
    return dataclasses.replace(plan, storage_data=host_tag())


def share_plans(
    plans: Sequence[LoadPlan], length: Callable[[MetadataIndex], int]
) -> list[LoadPlan]:
    """Every rank's plan with its :class:`SharePlan` (None where it shares nothing).

    ``plans[r]`` is rank r's; ranks group by the :class:`HostTag` their ``prepare_local_plan``
    left (a plan without one shares nothing). ``length`` gives a stored item's size in bytes;
    empty items are not shared (there is nothing to read).
    """
    groups: dict[HostTag, list[int]] = {}
    for rank, plan in enumerate(plans):
        if isinstance(plan.storage_data, HostTag):
            groups.setdefault(plan.storage_data, []).append(rank)
    shared: dict[int, SharePlan] = {}
    load = uuid.uuid4().hex
    for number, ranks in enumerate(groups.values()):
        if len(ranks) > 1:
            key = f"dcp_impl-{load}-h{number}"
            shared.update(_group_plans(key, ranks, plans, length))
    return [
        dataclasses.replace(plan, storage_data=shared.get(rank)) for rank, plan in enumerate(plans)
    ]


def _group_plans(
    key: str,
    ranks: Sequence[int],
    plans: Sequence[LoadPlan],
    length: Callable[[MetadataIndex], int],
) -> dict[int, SharePlan]:
    needs: dict[MetadataIndex, list[int]] = {}
    for rank in ranks:
        for index in dict.fromkeys(item.storage_index for item in plans[rank].items):
            needs.setdefault(index, []).append(rank)
    sizes = {index: length(index) for index, needing in needs.items() if len(needing) > 1}
    owners = _balanced({i: needs[i] for i, size in sizes.items() if size > 0}, sizes)
    slots = {index: (slot, owner) for slot, (index, owner) in enumerate(owners.items())}
    mine = {rank: {i: s for i, s in slots.items() if rank in needs[i]} for rank in ranks}
    # Only ranks that take a shared item join the segment: its last one to leave removes it.
    group = tuple(rank for rank in ranks if mine[rank])
    return {rank: SharePlan(key, rank, group, mine[rank]) for rank in group}


def _balanced(
    needs: Mapping[MetadataIndex, Sequence[int]], sizes: Mapping[MetadataIndex, int]
) -> dict[MetadataIndex, int]:
    """An owner per item: among the ranks needing it, the one with the fewest bytes so far,
    largest items first, so every rank reads about the same share from storage."""
    assigned: dict[int, int] = {}
    owners: dict[MetadataIndex, int] = {}
    for index in sorted(needs, key=lambda i: -sizes[i]):
        owner = min(needs[index], key=lambda r: (assigned.get(r, 0), r))
        assigned[owner] = assigned.get(owner, 0) + sizes[index]
        owners[index] = owner
    return owners
