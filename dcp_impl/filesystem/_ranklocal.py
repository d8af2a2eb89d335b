"""Collective-free saves (``dcp.save(..., use_collectives=False)``): one metadata file per rank.

No rank waits for another, so no rank can write the checkpoint's metadata: each commits
``.metadata-r<rank>.json`` (its own entries and chunks, dcp_impl's JSON format) atomically,
after its data files. A reader merges every rank's file into one ``Metadata``, so a load
over any number of ranks reads what it needs from whichever rank saved it (an N -> M
reshard). The merged metadata must describe whole tensors: a rank whose file is missing
(not committed yet, or lost) leaves a hole, and a stale file of an earlier save with more
ranks overlaps the new chunks; both raise :class:`~dcp_impl.errors.InvalidMetadataError`.
The rules are in docs/format.md ("Collective-free saves").
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorStorageMetadata,
)

from dcp_impl import metadata as metadata_format
from dcp_impl.errors import InvalidMetadataError, UnsupportedError
from dcp_impl.store import Store

__all__ = [
    "commit_rank",
    "is_rank_metadata",
    "rank_metadata_file",
    "rank_of",
    "read_merged",
    "remove_rank_metadata",
]

_RANK_METADATA = re.compile(r"\.metadata-r(?P<rank>0|[1-9][0-9]*)\.json")


def rank_metadata_file(rank: int) -> str:
    """The name of the metadata file rank ``rank`` commits in a collective-free save."""
    return f".metadata-r{rank}.json"


def is_rank_metadata(name: str) -> bool:
    """Whether ``name`` is a rank's metadata file of a collective-free save."""
    return _RANK_METADATA.fullmatch(name) is not None


def rank_of(owner: str, kwargs: Mapping[str, Any]) -> int | None:
    """The rank a collective-free save is made on (None: a save with collectives).

    torch passes ``rank=`` and ``use_collectives=`` to ``set_up_storage_writer``; a
    collective-free save without a rank cannot name its metadata file, so it is refused.
    """
    if kwargs.get("use_collectives", True) is not False:
        return None
    rank = kwargs.get("rank")
    if type(rank) is not int or rank < 0:
        raise UnsupportedError(
            f"{owner}: use_collectives=False needs the saving rank: expected rank= an int "
            f">= 0, got {rank!r}"
        )
    return rank


def commit_rank(
    store: Store, rank: int, metadata: Metadata, *, sync: bool, supersedes: str
) -> None:
    """Commit ``rank``'s metadata, then remove ``supersedes``, the whole-checkpoint metadata
    file of an earlier save (which readers would otherwise prefer to the rank files)."""
    # A rank's chunks cover only what it saved: the merge at load checks the whole.
    metadata_format.validate(metadata, allow_partial=True)
    store.commit(rank_metadata_file(rank), metadata_format.dumps(metadata).encode(), sync=sync)
    store.remove([supersedes])


def remove_rank_metadata(store: Store) -> None:
    """Remove the rank metadata files of an earlier collective-free save (after a commit of
    a whole-checkpoint metadata file, which supersedes them)."""
    store.remove([name for name in store.list_files() if is_rank_metadata(name)])


def read_merged(store: Store) -> Metadata | None:
    """Every rank's metadata merged into one, or None if the location holds none."""
    names = sorted(
        (n for n in store.list_files() if is_rank_metadata(n)),
        key=lambda n: int(_RANK_METADATA.fullmatch(n)["rank"]),  # type: ignore[index]
    )
    if not names:
        return None
    parts = [
        (name, metadata_format.loads(store.read_small(name, metadata_format.MAX_METADATA_BYTES)))
        for name in names
    ]
    merged = _merge(parts)
    try:
        metadata_format.validate(merged)
    except InvalidMetadataError as err:
        raise InvalidMetadataError(
            f"{store.url}: the rank metadata files {names} do not make one checkpoint (a rank's "
            f"file missing, or one left by an earlier save): {err}"
        ) from err
    return merged


def _merge(parts: Sequence[tuple[str, Metadata]]) -> Metadata:
    """One Metadata from the ranks' (lowest rank first); a replicated chunk keeps the first."""
    entries: dict[str, Any] = {}
    locations: dict[MetadataIndex, Any] = {}
    planner_data: dict[str, Any] = {}
    for name, part in parts:
        for fqn, entry in part.state_dict_metadata.items():
            entries[fqn] = _merge_entry(name, fqn, entries.get(fqn), entry)
        if isinstance(part.storage_data, dict):
            for index, location in part.storage_data.items():
                locations.setdefault(index, location)
        if isinstance(part.planner_data, dict):
            for key, value in part.planner_data.items():
                planner_data.setdefault(key, value)
    return dataclasses.replace(
        parts[0][1],
        state_dict_metadata=entries,
        planner_data=planner_data,
        storage_data=locations,
    )


def _merge_entry(name: str, fqn: str, have: Any, entry: Any) -> Any:
    if have is None:
        if isinstance(entry, TensorStorageMetadata):
            return dataclasses.replace(entry, chunks=list(entry.chunks))
        return entry
    if isinstance(have, BytesStorageMetadata) and isinstance(entry, BytesStorageMetadata):
        return have  # every rank saved it: the lowest rank's is read
    if not (isinstance(have, TensorStorageMetadata) and isinstance(entry, TensorStorageMetadata)):
        raise InvalidMetadataError(
            f"{name}: entry {fqn!r}: expected the kind other ranks saved "
            f"({type(have).__name__}), found {type(entry).__name__}"
        )
    if have.properties.dtype != entry.properties.dtype or list(have.size) != list(entry.size):
        raise InvalidMetadataError(
            f"{name}: tensor {fqn!r}: expected dtype {have.properties.dtype} and size "
            f"{tuple(have.size)} as other ranks saved, found {entry.properties.dtype} and "
            f"{tuple(entry.size)}"
        )
    known = {(tuple(c.offsets), tuple(c.sizes)) for c in have.chunks}
    have.chunks.extend(c for c in entry.chunks if (tuple(c.offsets), tuple(c.sizes)) not in known)
    return have
