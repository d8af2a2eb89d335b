"""The harness's planners: DCP's default planning over drawn state dicts, checked commits.

:class:`SpecSavePlanner` plans like torch's ``DefaultSavePlanner`` (so the backend sees what
real DCP would give it) over tensors, :class:`Shards` and plain objects; its
``resolve_data`` can fail on purpose (:class:`Fault`). :class:`SpecLoadPlanner` hands out
:data:`~spec_tests.sim.harness.tensors.SENTINEL`-filled destination views and checks that every
ReadItem is committed exactly once, into the view it handed out.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import uuid
from collections import ChainMap, Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.distributed.checkpoint._nested_dict import flatten_state_dict
from torch.distributed.checkpoint.default_planner import create_default_global_save_plan
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    TensorWriteData,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.planner_helpers import (
    _create_write_items,
    create_read_items_for_chunk_list,
)

from dcp_impl.dtypes import by_torch
from dcp_impl.layout import Box
from spec_tests.contract.verdicts import ContractViolation, text_of
from spec_tests.sim.harness.tensors import SENTINEL, Shards, region

__all__ = [
    "BytesRequest",
    "FailOn",
    "Fault",
    "InjectedFault",
    "MissingEntry",
    "Request",
    "SpecLoadPlanner",
    "SpecSavePlanner",
    "TensorRequest",
    "as_fault",
    "bytes_of",
    "index_key",
]


class InjectedFault(RuntimeError):
    """Raised on purpose by the harness' planners to test failure handling.

    Its message carries the :class:`Fault`'s token, so a property can tell the fault it
    injected from any other failure, even through a backend that re-raises it as text.
    """

    def __init__(self, what: str, token: str | None = None) -> None:
        self.token = token if token is not None else _new_token()
        super().__init__(f"{what} [{self.token}]")


_FAULTS = itertools.count()


def _new_token() -> str:
    return f"dcp-spec-fault-{next(_FAULTS)}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class Fault:
    """Which items a planner fails on purpose, and the token its :class:`InjectedFault` carries."""

    matches: Callable[[Any], bool]
    token: str = field(default_factory=_new_token)

    def found_in(self, exc: BaseException) -> bool:
        """Whether this fault is in ``exc``'s chain, messages or notes."""
        return self.token in text_of(exc)


FailOn = Callable[[Any], bool] | Fault


def as_fault(fail_on: FailOn | None) -> Fault | None:
    return fail_on if fail_on is None or isinstance(fail_on, Fault) else Fault(fail_on)


@dataclass(frozen=True, slots=True)
class TensorRequest:
    """Load these boxes of a tensor of ``shape`` and ``dtype`` (into strided buffers if asked).

    ``dest_dtype`` hands the backend destinations of another dtype than the stored one (a
    property checking that a load refuses to convert); by default they are of ``dtype``.
    ``guard`` places each destination inside a larger SENTINEL-filled buffer, that many
    elements from its start and from its end (as FSDP's flat parameters are views of one
    buffer): a load must write the destination and nothing around it.
    """

    dtype: torch.dtype
    shape: tuple[int, ...]
    boxes: tuple[Box, ...]
    noncontiguous: bool = False
    dest_dtype: torch.dtype | None = None
    guard: int = 0


@dataclass(frozen=True, slots=True)
class BytesRequest:
    """Load a non-tensor entry."""


Request = TensorRequest | BytesRequest


class SpecSavePlanner(SavePlanner):
    """DefaultSavePlanner's planning over :class:`Shards`; resolve_data can fail on purpose."""

    def __init__(self, fail_on: FailOn | None = None) -> None:
        self.fault = as_fault(fail_on)
        self.resolved: Counter[tuple[str, tuple[int, ...] | None]] = Counter()

    def set_up_planner(
        self,
        state_dict: dict[str, Any],
        storage_meta: StorageMeta | None = None,
        is_coordinator: bool = False,
    ) -> None:
        # docstring inherited
        self.state, self.mappings = flatten_state_dict(state_dict)
        self.is_coordinator = is_coordinator

    def create_local_plan(self) -> SavePlan:
        # docstring inherited
        items: list[WriteItem] = []
        for fqn, value in self.state.items():
            if isinstance(value, Shards):
                items += [_shard_item(fqn, value.shape, box, chunk) for box, chunk in value.chunks]
            else:
                items += _create_write_items(fqn, value)
        return SavePlan(items, planner_data=self.mappings)

    def create_global_plan(self, all_plans: list[SavePlan]) -> tuple[list[SavePlan], Metadata]:
        # docstring inherited
        plans, metadata = create_default_global_save_plan(_dedup_save_plans(all_plans))
        merged = dict(ChainMap(*[p.planner_data for p in plans]))
        return plans, dataclasses.replace(metadata, planner_data=merged)

    def finish_plan(self, new_plan: SavePlan) -> SavePlan:
        # docstring inherited
        return new_plan

    def resolve_data(self, write_item: WriteItem) -> torch.Tensor | io.BytesIO:
        # docstring inherited
        key = index_key(write_item.index)
        self.resolved[key] += 1
        if self.fault is not None and self.fault.matches(write_item):
            raise InjectedFault(f"resolve_data fails on purpose for {key}", self.fault.token)
        value = self.state[write_item.index.fqn]
        if isinstance(value, Shards):
            for box, chunk in value.chunks:
                if box.offsets == key[1]:
                    return chunk
            raise ContractViolation(
                f"resolve_data asked for {key}, a chunk this rank does not hold"
            )
        if write_item.type == WriteItemType.BYTE_IO:
            return bytes_of(value)
        return value


def _dedup_save_plans(all_plans: list[SavePlan]) -> list[SavePlan]:
    """torch's ``dedup_save_plans`` (each duplicate kept by the least-loaded plan).

    Reimplemented because torch sizes items with ``_element_size``, which
    raises for bits* dtypes: real DCP cannot save those, but a backend can.
    """
    holders: dict[MetadataIndex, list[int]] = {}
    sizes: dict[MetadataIndex, int] = {}
    for rank, plan in enumerate(all_plans):
        for item in plan.items:
            holders.setdefault(item.index, []).append(rank)
            sizes[item.index] = _item_bytes(item)
    load = [0] * len(all_plans)
    keep: dict[MetadataIndex, int] = {}
    for index, ranks in holders.items():
        chosen = min(ranks, key=lambda r: load[r])
        load[chosen] += sizes[index]
        keep[index] = chosen
    return [
        dataclasses.replace(plan, items=[i for i in plan.items if keep[i.index] == rank])
        for rank, plan in enumerate(all_plans)
    ]


def _item_bytes(item: WriteItem) -> int:
    if item.tensor_data is None:
        return 1  # as torch: the size of a BytesIO entry is unknown
    itemsize = by_torch(item.tensor_data.properties.dtype).itemsize
    return math.prod(item.tensor_data.chunk.sizes) * itemsize


def _shard_item(fqn: str, shape: tuple[int, ...], box: Box, chunk: torch.Tensor) -> WriteItem:
    offsets = torch.Size(box.offsets)
    return WriteItem(
        index=MetadataIndex(fqn, offsets),
        type=WriteItemType.SHARD,
        tensor_data=TensorWriteData(
            chunk=ChunkStorageMetadata(offsets=offsets, sizes=torch.Size(box.sizes)),
            properties=TensorProperties.create_from_tensor(chunk),
            size=torch.Size(shape),
        ),
    )


class SpecLoadPlanner(LoadPlanner):
    """Hands out SENTINEL-filled destination views and checks every read item is committed once."""

    def __init__(self, fail_on: FailOn | None = None) -> None:
        self.fault = as_fault(fail_on)
        self.committed: Counter[ReadItem] = Counter()
        self.loaded: dict[str, Any] = {}

    def set_up_planner(
        self,
        state_dict: dict[str, Any],
        metadata: Metadata | None = None,
        is_coordinator: bool = False,
    ) -> None:
        # docstring inherited
        if metadata is None:
            raise TypeError("the harness always passes metadata")
        self.requests: dict[str, Request] = state_dict
        self.metadata = metadata
        self.buffers: dict[str, list[torch.Tensor]] = {}

    def create_local_plan(self) -> LoadPlan:
        # docstring inherited
        items: list[ReadItem] = []
        entries = self.metadata.state_dict_metadata
        for fqn, request in self.requests.items():
            if fqn not in entries:
                raise MissingEntry(
                    f"read_metadata has no entry {fqn!r}; it has {sorted(entries)[:20]}"
                )
            stored = entries[fqn]
            if isinstance(request, BytesRequest):
                if not isinstance(stored, BytesStorageMetadata):
                    raise ContractViolation(
                        f"{fqn!r}: expected BytesStorageMetadata, found {stored!r}"
                    )
                items.append(_bytes_item(fqn))
                continue
            _check_tensor_entry(fqn, stored, request)
            assert isinstance(stored, TensorStorageMetadata)  # checked just above
            self.buffers[fqn] = [_destination(request, box) for box in request.boxes]
            chunks = [
                ChunkStorageMetadata(torch.Size(b.offsets), torch.Size(b.sizes))
                for b in request.boxes
            ]
            items += create_read_items_for_chunk_list(fqn, stored, chunks)
        return LoadPlan(items)

    def create_global_plan(self, global_plan: list[LoadPlan]) -> list[LoadPlan]:
        # docstring inherited
        return global_plan

    def finish_plan(self, central_plan: LoadPlan) -> LoadPlan:
        # docstring inherited
        return central_plan

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        # docstring inherited
        self.committed[read_item] += 1
        self.loaded[read_item.dest_index.fqn] = torch.load(value, weights_only=False)

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        # docstring inherited
        if self.fault is not None and self.fault.matches(read_item):
            raise InjectedFault(
                f"resolve_tensor fails on purpose for {read_item.dest_index}", self.fault.token
            )
        dest = self.buffers[read_item.dest_index.fqn][read_item.dest_index.index or 0]
        return region(dest, Box(tuple(read_item.dest_offsets), tuple(read_item.lengths)))

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        # docstring inherited
        expected = self.resolve_tensor(read_item)
        if (tensor.data_ptr(), tensor.shape, tensor.stride()) != (
            expected.data_ptr(),
            expected.shape,
            expected.stride(),
        ):
            raise ContractViolation(
                f"commit_tensor for {read_item.dest_index} got a tensor of shape "
                f"{tuple(tensor.shape)} "
                f"stride {tensor.stride()}: expected the view resolve_tensor handed out "
                f"(shape {tuple(expected.shape)} stride {expected.stride()})"
            )
        self.committed[read_item] += 1

    def check_complete(self, plan: LoadPlan, rank: int) -> None:
        """Raise ContractViolation unless every item of ``plan`` was committed exactly once."""
        wanted = Counter(plan.items)
        if wanted != self.committed:
            missing = [str(i.dest_index) for i in wanted - self.committed][:5]
            extra = [str(i.dest_index) for i in self.committed - wanted][:5]
            raise ContractViolation(
                f"rank {rank}: expected each ReadItem committed (commit_tensor/load_bytes) once; "
                f"not committed: {missing}, committed too often or unplanned: {extra}"
            )

    def results(self) -> dict[str, Any]:
        """The loaded entries: destination tensors per requested box, objects for bytes."""
        return {**self.buffers, **self.loaded}


class MissingEntry(ContractViolation):
    """``read_metadata`` lists no entry that a load asks for.

    A violation where the checkpoint is whole. Where a property removed part of it, this is
    how the load fails loudly: DCP's default planner raises for a missing key too.
    """


def _bytes_item(fqn: str) -> ReadItem:
    return ReadItem(
        type=LoadItemType.BYTE_IO,
        dest_index=MetadataIndex(fqn),
        dest_offsets=torch.Size((0,)),
        storage_index=MetadataIndex(fqn),
        storage_offsets=torch.Size((0,)),
        lengths=torch.Size((0,)),
    )


def _check_tensor_entry(fqn: str, stored: object, request: TensorRequest) -> None:
    if not isinstance(stored, TensorStorageMetadata):
        raise ContractViolation(f"{fqn!r}: expected TensorStorageMetadata, found {stored!r}")
    if tuple(stored.size) != request.shape or stored.properties.dtype != request.dtype:
        raise ContractViolation(
            f"{fqn!r}: expected size {request.shape} dtype {request.dtype} in read_metadata, "
            f"found size {tuple(stored.size)} dtype {stored.properties.dtype}"
        )


def _destination(request: TensorRequest, box: Box) -> torch.Tensor:
    """A SENTINEL-filled buffer for ``box`` (inside a guarded one when asked); transposed
    storage when asked for."""
    sizes = box.sizes[::-1] if request.noncontiguous else box.sizes
    numel, guard = math.prod(sizes), request.guard
    whole = torch.empty(numel + 2 * guard, dtype=request.dest_dtype or request.dtype)
    whole.view(torch.uint8).fill_(SENTINEL)
    buffer = whole[guard : guard + numel].view(sizes)
    return buffer.permute(tuple(reversed(range(buffer.ndim)))) if request.noncontiguous else buffer


def bytes_of(obj: object) -> io.BytesIO:
    """The BytesIO DCP's default planner stores for a non-tensor entry."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer


def index_key(index: Any) -> tuple[str, tuple[int, ...] | None]:
    return (index.fqn, None if index.offset is None else tuple(index.offset))
