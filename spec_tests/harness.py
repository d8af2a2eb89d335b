"""A simulated N-rank driver that calls a backend exactly as ``dcp.save`` / ``dcp.load`` do.

One writer (reader) instance per rank, called in DCP's order (see torch's
``state_dict_saver._save_state_dict`` and ``state_dict_loader._load_state_dict``):

save: ``reset(path)``; ``storage_meta()``; ``set_up_storage_writer(is_coordinator, rank=,
use_collectives=)``; ``prepare_local_plan``; coordinator ``prepare_global_plan`` after the
planner's global planning (``dedup_save_plans`` logic, ``create_default_global_save_plan``);
``write_data`` -> future of ``list[WriteResult]``; coordinator ``finish(metadata, results)``.

load: ``reset(path)``; ``read_metadata``; ``set_up_storage_reader``; ``prepare_local_plan``;
coordinator ``prepare_global_plan``; ``read_data``.

Write and read items come from torch's own planner helpers, so the backend
sees what real DCP would give it. Contract violations raise AssertionError
naming the values; BaseExceptions that escape a backend (torch's
``CheckpointException``) become :class:`BackendBaseException` so hypothesis
treats them as failures and shrinks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import math
import os
import time
import warnings
from collections import ChainMap, Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from hypothesis import note
from hypothesis.errors import InvalidArgument
from hypothesis.vendor.pretty import pretty
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
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult

from dcp_impl.dtypes import by_torch
from dcp_impl.layout import Box
from spec_tests.backends import Backend

__all__ = [
    "SENTINEL",
    "BackendBaseException",
    "BytesRequest",
    "InjectedFault",
    "SaveRecord",
    "Shards",
    "TensorRequest",
    "as_bytes",
    "assert_bit_equal",
    "call",
    "load",
    "region",
    "repro",
    "save",
    "shard",
]

_T = TypeVar("_T")
_FUTURE_TIMEOUT_S = 300.0
SENTINEL = 0xA5
"""Byte every load destination holds before the backend writes it."""


class InjectedFault(RuntimeError):
    """Raised on purpose by the harness' planners to test failure handling."""


@dataclass(frozen=True, slots=True, eq=False)
class Shards:
    """The chunks of one sharded tensor that a rank holds (each may be a non-contiguous view)."""

    shape: tuple[int, ...]
    chunks: tuple[tuple[Box, torch.Tensor], ...]

    def __post_init__(self) -> None:
        for box, chunk in self.chunks:
            if tuple(chunk.shape) != box.sizes:
                raise ValueError(f"chunk of shape {tuple(chunk.shape)} does not match {box}")


@dataclass(frozen=True, slots=True)
class TensorRequest:
    """Load these boxes of a tensor of ``shape`` and ``dtype`` (into strided buffers if asked)."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    boxes: tuple[Box, ...]
    noncontiguous: bool = False


@dataclass(frozen=True, slots=True)
class BytesRequest:
    """Load a non-tensor entry."""


Request = TensorRequest | BytesRequest


class SpecSavePlanner(SavePlanner):
    """DefaultSavePlanner's planning over :class:`Shards`; resolve_data can fail on purpose."""

    def __init__(self, fail_on: Callable[[WriteItem], bool] | None = None) -> None:
        self.fail_on = fail_on
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
        key = _index_key(write_item.index)
        self.resolved[key] += 1
        if self.fail_on is not None and self.fail_on(write_item):
            raise InjectedFault(f"resolve_data fails on purpose for {key}")
        value = self.state[write_item.index.fqn]
        if isinstance(value, Shards):
            for box, chunk in value.chunks:
                if box.offsets == key[1]:
                    return chunk
            raise AssertionError(f"resolve_data asked for {key}, a chunk this rank does not hold")
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

    def __init__(self, fail_on: Callable[[ReadItem], bool] | None = None) -> None:
        self.fail_on = fail_on
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
            raise AssertionError("the harness always passes metadata")
        self.requests: dict[str, Request] = state_dict
        self.metadata = metadata
        self.buffers: dict[str, list[torch.Tensor]] = {}

    def create_local_plan(self) -> LoadPlan:
        # docstring inherited
        items: list[ReadItem] = []
        entries = self.metadata.state_dict_metadata
        for fqn, request in self.requests.items():
            if fqn not in entries:
                raise AssertionError(
                    f"read_metadata has no entry {fqn!r}; it has {sorted(entries)[:20]}"
                )
            stored = entries[fqn]
            if isinstance(request, BytesRequest):
                if not isinstance(stored, BytesStorageMetadata):
                    raise AssertionError(
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
        if self.fail_on is not None and self.fail_on(read_item):
            raise InjectedFault(f"resolve_tensor fails on purpose for {read_item.dest_index}")
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
            raise AssertionError(
                f"commit_tensor for {read_item.dest_index} got a tensor of shape "
                f"{tuple(tensor.shape)} "
                f"stride {tensor.stride()}: expected the view resolve_tensor handed out "
                f"(shape {tuple(expected.shape)} stride {expected.stride()})"
            )
        self.committed[read_item] += 1

    def check_complete(self, plan: LoadPlan, rank: int) -> None:
        """Raise AssertionError unless every item of ``plan`` was committed exactly once."""
        wanted = Counter(plan.items)
        if wanted != self.committed:
            missing = [str(i.dest_index) for i in wanted - self.committed][:5]
            extra = [str(i.dest_index) for i in self.committed - wanted][:5]
            raise AssertionError(
                f"rank {rank}: expected each ReadItem committed (commit_tensor/load_bytes) once; "
                f"not committed: {missing}, committed too often or unplanned: {extra}"
            )

    def results(self) -> dict[str, Any]:
        """The loaded entries: destination tensors per requested box, objects for bytes."""
        return {**self.buffers, **self.loaded}


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
        raise AssertionError(f"{fqn!r}: expected TensorStorageMetadata, found {stored!r}")
    if tuple(stored.size) != request.shape or stored.properties.dtype != request.dtype:
        raise AssertionError(
            f"{fqn!r}: expected size {request.shape} dtype {request.dtype} in read_metadata, "
            f"found size {tuple(stored.size)} dtype {stored.properties.dtype}"
        )


def _destination(request: TensorRequest, box: Box) -> torch.Tensor:
    """A SENTINEL-filled buffer for ``box``; transposed storage when asked for."""
    sizes = box.sizes[::-1] if request.noncontiguous else box.sizes
    buffer = torch.empty(sizes, dtype=request.dtype)
    buffer.view(torch.uint8).fill_(SENTINEL) if buffer.ndim else buffer.reshape(1).view(
        torch.uint8
    ).fill_(SENTINEL)
    return buffer.permute(tuple(reversed(range(buffer.ndim)))) if request.noncontiguous else buffer


class BackendBaseException(Exception):
    """A backend raised a BaseException (e.g. torch's CheckpointException); chained as cause."""


@dataclass(frozen=True, slots=True, eq=False)
class SaveRecord:
    """What a simulated save handed the backend: the metadata and results given to finish."""

    metadata: Metadata
    plans: tuple[SavePlan, ...]
    results: tuple[tuple[WriteResult, ...], ...]


def call(label: str, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """Call a backend method; name it in any error, and turn BaseExceptions into Exceptions."""
    try:
        # A backend's warnings (torch-fs warns on every overwrite) are not contract
        # violations, and a project's "filterwarnings = error" must not make them so.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn(*args, **kwargs)
        for warning in caught:
            _note(f"{label} warned: {warning.category.__name__}: {warning.message}")
        return result
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except Exception as exc:
        exc.add_note(f"raised by {label}")
        raise
    except BaseException as exc:
        if type(exc).__module__.startswith("hypothesis"):
            raise  # hypothesis' own control flow (StopTest etc.)
        raise BackendBaseException(
            f"{label} raised {type(exc).__name__}, a BaseException that is not an Exception: {exc}"
        ) from exc


def _note(text: str) -> None:
    """``hypothesis.note`` inside a property; nothing outside one."""
    with contextlib.suppress(InvalidArgument):
        note(text)


def _accepts_kwargs(fn: Callable[..., Any]) -> bool:
    return "kwargs" in inspect.signature(fn).parameters


def _wait(label: str, future: Any) -> Any:
    """Wait for a torch Future (or concurrent.futures.Future) and return its value."""
    if not hasattr(future, "wait") and not hasattr(future, "result"):
        raise AssertionError(f"{label} returned {future!r}: expected a Future")
    deadline = time.monotonic() + _FUTURE_TIMEOUT_S
    while not future.done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{label}'s future did not complete in {_FUTURE_TIMEOUT_S} s")
        time.sleep(0.001)
    if hasattr(future, "wait"):
        return call(f"{label} future", future.wait)
    return call(f"{label} future", future.result)


Hook = Callable[[str, int], None]


def _noop(_label: str, _rank: int) -> None:
    return None


def save(
    backend: Backend,
    path: str,
    states: Sequence[Mapping[str, Any]],
    *,
    fail_on: Callable[[WriteItem], bool] | None = None,
    extra_kwargs: Mapping[str, Any] | None = None,
    before_call: Hook = _noop,
    writers: Sequence[StorageWriter] | None = None,
    checkpoint_id: bool = True,
) -> SaveRecord:
    """Save ``states[r]`` from simulated rank ``r``; return what ``finish`` was given.

    Values are tensors (saved whole), :class:`Shards` (chunks of a sharded
    tensor) or any other object (stored as BytesIO). ``fail_on`` makes
    ``resolve_data`` raise :class:`InjectedFault` for matching items;
    ``extra_kwargs`` go to every method whose abstract signature takes
    ``**kwargs``; ``before_call(label, rank)`` runs before each backend call.
    ``checkpoint_id=False`` calls ``reset()`` without ``path``, as ``dcp.save`` does when
    given a storage_writer and no checkpoint_id (``writers`` made for ``path`` then).
    """
    n = len(states)
    ws = list(writers) if writers is not None else [backend.make_writer(path) for _ in range(n)]
    planners = [SpecSavePlanner(fail_on) for _ in states]
    extra = dict(extra_kwargs or {})

    def step(who: int, name: str, /, *args: Any, **kwargs: Any) -> Any:
        before_call(name, who)
        return call(
            f"{backend.name} writer rank {who}: {name}", getattr(ws[who], name), *args, **kwargs
        )

    local_plans = []
    for rank, (writer, planner) in enumerate(zip(ws, planners, strict=True)):
        step(rank, "reset", *([path] if checkpoint_id else []))
        meta = step(rank, "storage_meta")
        planner.set_up_planner(dict(states[rank]), storage_meta=meta, is_coordinator=rank == 0)
        if _accepts_kwargs(writer.set_up_storage_writer):
            step(rank, "set_up_storage_writer", rank == 0, rank=rank, use_collectives=True, **extra)
        else:
            step(rank, "set_up_storage_writer", rank == 0)
        local = step(rank, "prepare_local_plan", planner.create_local_plan())
        _expect_type("prepare_local_plan", local, SavePlan)
        local_plans.append(local)
    global_plans, metadata = planners[0].create_global_plan(local_plans)
    global_plans = step(0, "prepare_global_plan", global_plans)
    if len(global_plans) != n:
        raise AssertionError(
            f"prepare_global_plan returned {len(global_plans)} plans for {n} ranks"
        )
    finals, results = [], []
    for rank, planner in enumerate(planners):
        final = planner.finish_plan(global_plans[rank])
        future = step(rank, "write_data", final, planner)
        written = _wait(f"{backend.name} rank {rank} write_data", future)
        _check_results(rank, final, written)
        finals.append(final)
        results.append(list(written))
    step(0, "finish", metadata=metadata, results=results)
    return SaveRecord(metadata, tuple(finals), tuple(tuple(r) for r in results))


def _expect_type(what: str, value: object, kind: type) -> None:
    if not isinstance(value, kind):
        raise AssertionError(f"{what} returned {type(value).__name__}: expected {kind.__name__}")


def _index_key(index: Any) -> tuple[str, tuple[int, ...] | None]:
    return (index.fqn, None if index.offset is None else tuple(index.offset))


def _check_results(rank: int, plan: SavePlan, written: object) -> None:
    if not isinstance(written, list) or not all(isinstance(w, WriteResult) for w in written):
        raise AssertionError(
            f"rank {rank} write_data future gave {written!r}: expected list[WriteResult]"
        )
    wanted = Counter(_index_key(item.index) for item in plan.items)
    got = Counter(_index_key(w.index) for w in written)
    if wanted != got:
        raise AssertionError(
            f"rank {rank}: expected one WriteResult per WriteItem; missing {dict(wanted - got)}, "
            f"unexpected {dict(got - wanted)}"
        )


def load(
    backend: Backend,
    path: str,
    requests: Sequence[Mapping[str, Request]],
    *,
    extra_kwargs: Mapping[str, Any] | None = None,
    fail_on: Callable[[Any], bool] | None = None,
    readers: Sequence[StorageReader] | None = None,
) -> list[dict[str, Any]]:
    """Load ``requests[r]`` on simulated rank ``r``; return each rank's results.

    A :class:`TensorRequest` yields the list of destination tensors, one per
    requested box (pre-filled with :data:`SENTINEL` bytes, so regions a
    backend never wrote show up); a :class:`BytesRequest` yields the object.
    ``fail_on(read_item)`` makes ``resolve_tensor`` raise InjectedFault.
    """
    n = len(requests)
    rs = list(readers) if readers is not None else [backend.make_reader(path) for _ in range(n)]
    planners = [SpecLoadPlanner(fail_on) for _ in range(n)]
    extra = dict(extra_kwargs or {})

    def step(who: int, name: str, /, *args: Any, **kwargs: Any) -> Any:
        return call(
            f"{backend.name} reader rank {who}: {name}", getattr(rs[who], name), *args, **kwargs
        )

    local_plans = []
    for rank, (reader, planner) in enumerate(zip(rs, planners, strict=True)):
        step(rank, "reset", path)
        metadata = step(rank, "read_metadata", **extra)
        _expect_type("read_metadata", metadata, Metadata)
        planner.set_up_planner(dict(requests[rank]), metadata, is_coordinator=rank == 0)
        if _accepts_kwargs(reader.set_up_storage_reader):
            step(
                rank,
                "set_up_storage_reader",
                metadata,
                rank == 0,
                rank=rank,
                use_collectives=True,
                **extra,
            )
        else:
            step(rank, "set_up_storage_reader", metadata, rank == 0)
        local_plans.append(step(rank, "prepare_local_plan", planner.create_local_plan()))
    global_plans = step(0, "prepare_global_plan", planners[0].create_global_plan(local_plans))
    if len(global_plans) != n:
        raise AssertionError(
            f"prepare_global_plan returned {len(global_plans)} plans for {n} ranks"
        )
    for rank, planner in enumerate(planners):
        final = planner.finish_plan(global_plans[rank])
        _wait(f"{backend.name} rank {rank} read_data", step(rank, "read_data", final, planner))
        planner.check_complete(final, rank)
    return [planner.results() for planner in planners]


def shard(
    value: torch.Tensor, boxes: Sequence[Sequence[Box]]
) -> list[torch.Tensor | Shards | None]:
    """Per rank, what it holds of ``value`` under ``boxes[rank]``: nothing, all, or Shards."""
    shape = tuple(value.shape)
    # DCP never mixes TENSOR and SHARD items of one entry: plain tensors only when
    # every holder has the whole tensor (unsharded or replicated).
    whole = all(list(r) == [Box.full(shape)] for r in boxes if r)
    out: list[torch.Tensor | Shards | None] = []
    for rank_boxes in boxes:
        if not rank_boxes:
            out.append(None)
        elif whole:
            out.append(value)
        else:
            out.append(Shards(shape, tuple((b, region(value, b)) for b in rank_boxes)))
    return out


def region(tensor: torch.Tensor, box: Box) -> torch.Tensor:
    """The view of ``tensor`` that ``box`` covers."""
    for dim, (start, length) in enumerate(zip(box.offsets, box.sizes, strict=True)):
        tensor = tensor.narrow(dim, start, length)
    return tensor


def as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The row-major bytes of ``tensor`` as a flat uint8 tensor (any dtype, any strides)."""
    if tensor.numel() == 0:
        return torch.empty(0, dtype=torch.uint8)
    dense = torch.empty(tuple(tensor.shape), dtype=tensor.dtype)
    dense.copy_(tensor)
    return dense.reshape(-1).view(torch.uint8)


def assert_bit_equal(actual: torch.Tensor, expected: torch.Tensor, *, what: str) -> None:
    """Raise AssertionError unless the tensors agree in dtype, shape and every bit."""
    if actual.dtype != expected.dtype or tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(
            f"{what}: expected dtype {expected.dtype} shape {tuple(expected.shape)}, "
            f"found dtype {actual.dtype} shape {tuple(actual.shape)}"
        )
    got, want = as_bytes(actual), as_bytes(expected)
    if torch.equal(got, want):
        return
    itemsize = max(1, want.numel() // max(1, expected.numel()))
    bad = torch.nonzero(got != want).flatten()
    elements = sorted({int(i) // itemsize for i in bad[:256]})[:4]
    shown = "; ".join(
        f"element {e}: expected {bytes(want[e * itemsize : (e + 1) * itemsize].tolist()).hex()} "
        f"found {bytes(got[e * itemsize : (e + 1) * itemsize].tolist()).hex()}"
        for e in elements
    )
    unwritten = bool((got[bad] == SENTINEL).all())
    hint = (
        " (every wrong byte still holds the sentinel: the backend never wrote it)"
        if unwritten
        else ""
    )
    raise AssertionError(f"{what}: {bad.numel()} of {want.numel()} bytes differ{hint}: {shown}")


@contextlib.contextmanager
def repro(backend: Backend, **fields: object) -> Iterator[None]:
    """Attach a reproduction note (backend, the case's fields, how to rerun) to any failure."""
    try:
        yield
    except Exception as exc:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        lines = [f"DCP conformance failure for backend {backend.name!r} in {test}"]
        lines += [f"  {key} = {_short(value)}" for key, value in fields.items()]
        lines.append(
            f"  rerun: pytest --pyargs spec_tests --dcp-backend=<spec of {backend.name!r}> "
            f"-k {test.rsplit('::', 1)[-1]!r}; with --hypothesis-profile=dcp-ci hypothesis prints "
            "a @reproduce_failure blob above that replays this exact example"
        )
        exc.add_note("\n".join(lines))
        raise


def _short(value: object, limit: int = 400) -> str:
    text = pretty(value)  # hypothesis' printer: torch's repr fails on bits* tensors
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def bytes_of(obj: object) -> io.BytesIO:
    """The BytesIO DCP's default planner stores for a non-tensor entry."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer
