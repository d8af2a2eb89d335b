"""Save planning for HuggingFace folders: which file each rank writes each chunk to.

The coordinator's :class:`Assignment` per rank comes from :func:`whole_tensor_names`
(one whole tensor per name, torch's ``model-0000i-of-0000N`` files, or
``model.safetensors`` when there is one file) or
:func:`distributed_names` (``shard-0000s-`` files per rank); ``fqn_to_index_mapping``
gives each tensor its file number ``i`` (docs/huggingface.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import SavePlan, WriteItem, WriteItemType

from dcp_impl.errors import LayoutMismatchError
from dcp_impl.huggingface._folder import file_name, whole_file_name
from dcp_impl.layout import Box

__all__ = [
    "Assignment",
    "check_mapping",
    "file_index",
    "file_count",
    "whole_tensor_names",
    "distributed_names",
]


@dataclass(frozen=True, slots=True)
class Assignment:
    """What the coordinator tells one rank to write: SavePlan.storage_data of a global plan."""

    save_id: str
    files: Mapping[MetadataIndex, str]
    """Tensor chunk -> name of the safetensors file that holds it."""
    bytes_file: str


def check_mapping(mapping: Mapping[str, int]) -> None:
    """Refuse an ``fqn_to_index_mapping`` whose file numbers are not ints >= 1."""
    for fqn, index in mapping.items():
        if type(index) is not int or index < 1:
            raise ValueError(
                f"fqn_to_index_mapping[{fqn!r}]: expected a file number >= 1, found {index!r}"
            )


def file_index(mapping: Mapping[str, int] | None, fqn: str) -> int:
    """The file number ``i`` of tensor ``fqn`` (1 without a mapping)."""
    if mapping is None:
        return 1
    if fqn not in mapping:
        raise LayoutMismatchError(
            f"tensor {fqn!r}: expected a file number in fqn_to_index_mapping, found none"
        )
    return mapping[fqn]


def file_count(mapping: Mapping[str, int] | None) -> int:
    """The ``N`` of ``model-0000i-of-0000N``: the largest file number."""
    return max(mapping.values(), default=1) if mapping else 1


def _tensor_items(plan: SavePlan) -> list[WriteItem]:
    return [item for item in plan.items if item.type != WriteItemType.BYTE_IO]


def whole_tensor_names(
    plans: Sequence[SavePlan], mapping: Mapping[str, int] | None
) -> list[dict[MetadataIndex, str]]:
    """File names for whole tensors; files several ranks would share are numbered apart."""
    owners: dict[str, tuple[int, WriteItem]] = {}
    for rank, plan in enumerate(plans):
        for item in _tensor_items(plan):
            fqn = item.index.fqn
            if fqn in owners:
                raise LayoutMismatchError(
                    f"tensor {fqn!r}: save_distributed=False expects one whole tensor per name, "
                    f"found chunks on ranks {owners[fqn][0]} and {rank}; "
                    "pass save_distributed=True to save chunks"
                )
            assert item.tensor_data is not None  # HuggingFaceWriter.prepare_local_plan checked it
            chunk = Box.of(item.tensor_data.chunk)
            if chunk != Box.full(item.tensor_data.size):
                raise LayoutMismatchError(
                    f"tensor {fqn!r}: save_distributed=False expects the whole tensor of size "
                    f"{tuple(item.tensor_data.size)}, found a chunk at offsets {chunk.offsets} "
                    f"of sizes {chunk.sizes}; pass save_distributed=True to save chunks"
                )
            owners[fqn] = (rank, item)
    buckets: dict[tuple[int, int], list[MetadataIndex]] = {}
    for fqn, (rank, item) in owners.items():
        buckets.setdefault((file_index(mapping, fqn), rank), []).append(item.index)
    # torch names every rank's file model-i-of-N, so ranks overwrite each other; where ranks
    # share a file number, number the (file, rank) pairs 1..K instead. The index points to them.
    if len({index for index, _ in buckets}) == len(buckets):
        numbers = {key: key[0] for key in buckets}
        count = file_count(mapping)
    else:
        numbers = {key: n for n, key in enumerate(sorted(buckets), start=1)}
        count = len(buckets)
    names: list[dict[MetadataIndex, str]] = [{} for _ in plans]
    for (index, rank), keys in buckets.items():
        for key in keys:
            names[rank][key] = whole_file_name(numbers[index, rank], count)
    return names


def distributed_names(
    plans: Sequence[SavePlan], mapping: Mapping[str, int] | None
) -> list[dict[MetadataIndex, str]]:
    """``shard-s-model-i-of-N`` names: rank r writes shard r+1; its k-th extra chunk of one
    tensor goes to an extra shard numbered after the ranks (a file holds one entry per name)."""
    count = file_count(mapping)
    next_extra = len(plans) + 1
    names: list[dict[MetadataIndex, str]] = []
    for rank, plan in enumerate(plans):
        seen: dict[str, int] = {}
        shards = {0: rank + 1}
        mine: dict[MetadataIndex, str] = {}
        for item in _tensor_items(plan):
            slot = seen.get(item.index.fqn, 0)
            seen[item.index.fqn] = slot + 1
            if slot not in shards:
                shards[slot], next_extra = next_extra, next_extra + 1
            mine[item.index] = file_name(file_index(mapping, item.index.fqn), count, shards[slot])
        names.append(mine)
    return names
