"""Broken backends whose bug is on the save side: what the writer stores or reports.

Each backend's docstring says what it breaks and which property family must reject it.
"""

from __future__ import annotations

import dataclasses
import io
import math
import threading
from typing import Any, ClassVar

import torch
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItem
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from dcp_impl.dtypes import by_torch
from spec_tests.contract.reference import StoredItem
from spec_tests.selftest.wrap import SavePlannerProxy, Wrapped, WrappedWriter, done, planner_with
from spec_tests.sim.harness import bytes_of

__all__ = [
    "Complex128AsComplex64",
    "DropsNonTensorEntries",
    "DropsSecondChunk",
    "DuplicatesAResult",
    "Float8ViaUint8",
    "ForgetsWriteResults",
    "LosesLastResult",
    "NaNCanonicalized",
    "PieceShiftOver16MiB",
    "SavesStorageOrder",
    "SidecarThreadRaises",
    "SkipsFailingItem",
    "TruncatesLargeObjects",
    "WorkerErrorLost",
]

_MiB = 1 << 20


# --- failures swallowed -------------------------------------------------------------------------


class _SkipFailing(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        kept = []
        for item in plan.items:
            try:
                planner.resolve_data(item)
            except Exception:
                continue  # "one bad tensor should not cost the whole checkpoint"
            kept.append(item)
        return self.inner.write_data(dataclasses.replace(plan, items=kept), planner)


class SkipsFailingItem(Wrapped):
    """A "best effort" writer: an item whose data cannot be resolved is skipped, the rest saved.

    Family: faults (``test_failing_item_fails_save``: the save must fail, with the fault).
    """

    writer = _SkipFailing
    family = "faults"


def _zeros_result(item: WriteItem) -> WriteResult:
    if item.tensor_data is None:
        return WriteResult(item.index, 0, StoredItem(b""))
    sizes = tuple(item.tensor_data.chunk.sizes)
    dtype = item.tensor_data.properties.dtype
    data = bytes(math.prod(sizes) * by_torch(dtype).itemsize)
    return WriteResult(item.index, len(data), StoredItem(data, dtype, sizes))


class _WorkerPerItem(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        # Slots start as zero payloads of each item's size; a worker that raises dies with
        # its exception printed by threading's excepthook and its slot never filled.
        slots = [_zeros_result(item) for item in plan.items]

        def work(k: int, item: WriteItem) -> None:
            one = dataclasses.replace(plan, items=[item])
            slots[k] = self.inner.write_data(one, planner).wait()[0]

        workers = [threading.Thread(target=work, args=kv) for kv in enumerate(plan.items)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return done(slots)


class WorkerErrorLost(Wrapped):
    """Writes each item on its own thread; a thread's exception is lost, its item saved as zeros.

    Family: faults (the injected fault must fail the save; an unsurfaced thread exception too).
    """

    writer = _WorkerPerItem
    family = "faults"


class _Sidecar(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        future = self.inner.write_data(plan, planner)
        resolved = [planner.resolve_data(i) for i in plan.items]
        tensors = [t for t in resolved if isinstance(t, torch.Tensor)]

        def summarise() -> None:
            # numpy has no bfloat16, float8 or complex32: .numpy() raises TypeError for them.
            self.summary = [float(abs(t.detach().numpy()).max(initial=0)) for t in tensors]

        sidecar = threading.Thread(target=summarise, name="checkpoint-summary")
        sidecar.start()
        sidecar.join()  # waited for, but its exception is never looked at
        return future


class SidecarThreadRaises(Wrapped):
    """Data saved correctly, but a statistics thread it starts raises and nobody surfaces it.

    Family: any (an exception in a thread the backend started must fail the test).
    """

    base = "dcp_impl-fs"
    writer = _Sidecar
    family = "roundtrip"


# --- results --------------------------------------------------------------------------------------


class _NoResults(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        self.inner.write_data(plan, planner).wait()
        return done([])  # the list of results is built... and never returned


class ForgetsWriteResults(Wrapped):
    """write_data writes everything but its future completes with no WriteResults.

    Family: contract (one WriteResult per WriteItem).
    """

    writer = _NoResults
    family = "contract"


class _LosesLast(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        results = self.inner.write_data(plan, planner).wait()
        return done(results[: max(1, len(results) - 1)])  # off by one when joining


class LosesLastResult(Wrapped):
    """Drops the last WriteResult of a plan with several items (an off-by-one when joining).

    Family: contract (one WriteResult per WriteItem).
    """

    base = "dcp_impl-fs"
    writer = _LosesLast
    family = "contract"


class _Duplicates(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        results = self.inner.write_data(plan, planner).wait()
        return done(results + results[:1])  # a retried first file reported twice


class DuplicatesAResult(Wrapped):
    """Reports the first WriteResult twice (a retried write counted again).

    Family: contract (one WriteResult per WriteItem).
    """

    base = "dcp_impl-fs"
    writer = _Duplicates
    family = "contract"


# --- data changed on the way in -------------------------------------------------------------------


class _Canonical(SavePlannerProxy):
    def resolve_data(self, write_item: WriteItem) -> Any:
        data = self.inner.resolve_data(write_item)
        if isinstance(data, torch.Tensor) and data.dtype in (
            torch.float16,
            torch.bfloat16,
            torch.float32,
            torch.float64,
        ):
            nan = torch.tensor(float("nan"), dtype=data.dtype)
            return torch.where(data.isnan(), nan, data) + 0  # also turns -0.0 into 0.0
        return data


class NaNCanonicalized(Wrapped):
    """ "Sanitises" floats on save: every NaN becomes the canonical NaN and -0.0 becomes 0.0.

    Family: roundtrip (bit-exact values).
    """

    writer = planner_with(_Canonical)
    family = "roundtrip"


class _StorageOrder(SavePlannerProxy):
    def resolve_data(self, write_item: WriteItem) -> Any:
        data = self.inner.resolve_data(write_item)
        if not isinstance(data, torch.Tensor) or data.is_contiguous() or data.ndim == 0:
            return data
        strides = [1] * data.ndim
        for d in range(data.ndim - 2, -1, -1):
            strides[d] = strides[d + 1] * data.shape[d + 1]
        needed = data.storage_offset() + data.numel()
        if needed * data.element_size() > data.untyped_storage().nbytes():
            return data
        # The bytes of the view's storage, taken as if they were the view's row-major values.
        return data.as_strided(data.shape, strides, data.storage_offset())


class SavesStorageOrder(Wrapped):
    """Saves a non-contiguous view as its storage's byte order, not its row-major values.

    Family: roundtrip (``test_noncontiguous_tensors``, transposed large tensors).
    """

    base = "dcp_impl-fs"
    writer = planner_with(_StorageOrder)
    family = "roundtrip"


class _PieceShift(SavePlannerProxy):
    def resolve_data(self, write_item: WriteItem) -> Any:
        data = self.inner.resolve_data(write_item)
        piece = 16 * _MiB
        if not isinstance(data, torch.Tensor) or data.numel() * data.element_size() <= piece:
            return data
        raw = data.detach().contiguous().reshape(-1).view(torch.uint8)
        shifted = raw.clone()
        shifted[piece:] = raw[piece - 1 : -1]  # every piece after the first starts one byte early
        return shifted.view(data.dtype).reshape(data.shape)


class PieceShiftOver16MiB(Wrapped):
    """Writes items in 16 MiB pieces; every piece after the first is taken one byte early.

    Family: roundtrip (sizes past every buffer: tensors over 16 MiB).
    """

    writer = planner_with(_PieceShift)
    family = "roundtrip"


class _SmallObjects(SavePlannerProxy):
    def resolve_data(self, write_item: WriteItem) -> Any:
        data = self.inner.resolve_data(write_item)
        if isinstance(data, io.BytesIO):
            return io.BytesIO(data.getvalue()[: 64 << 10])  # the small-object buffer's size
        return data


class TruncatesLargeObjects(Wrapped):
    """Copies non-tensor entries through a 64 KiB buffer: a larger one is cut short.

    Family: roundtrip (non-tensor entries of every size).
    """

    writer = planner_with(_SmallObjects)
    family = "roundtrip"


# --- unclaimed capabilities that fail silently ---------------------------------------------------


class _SecondChunk(SavePlannerProxy):
    def __init__(self, inner: SavePlanner) -> None:
        super().__init__(inner)
        self.seen: set[str] = set()  # one proxy per write_data call: per rank

    def resolve_data(self, write_item: WriteItem) -> Any:
        data = self.inner.resolve_data(write_item)
        first = write_item.index.fqn not in self.seen
        self.seen.add(write_item.index.fqn)
        if first or not isinstance(data, torch.Tensor):
            return data
        return torch.zeros_like(data.view(torch.uint8)).view(data.dtype)  # the name is taken


class DropsSecondChunk(Wrapped):
    """Keys stored tensors by name: a rank's second chunk of a tensor is saved as zeros.

    It does not claim ``multi-chunk``, but the save succeeds and the load returns zeros:
    a silent loss, not a refusal. Family: loud refusal of unclaimed capabilities.
    """

    writer = planner_with(_SecondChunk)
    unclaimed: ClassVar[frozenset[str]] = frozenset({"multi-chunk"})
    family = "unclaimed"


class _OnlyTensors(SavePlannerProxy):
    def resolve_data(self, write_item: WriteItem) -> Any:
        data = self.inner.resolve_data(write_item)
        return bytes_of(None) if isinstance(data, io.BytesIO) else data


class DropsNonTensorEntries(Wrapped):
    """Serialises tensors only: every non-tensor entry is written as ``None``.

    It does not claim ``bytes``, but the save succeeds and the load returns None.
    Family: loud refusal of unclaimed capabilities.
    """

    writer = planner_with(_OnlyTensors)
    unclaimed: ClassVar[frozenset[str]] = frozenset({"bytes"})
    family = "unclaimed"


class _Complex64(SavePlannerProxy):
    def resolve_data(self, write_item: WriteItem) -> Any:
        data = self.inner.resolve_data(write_item)
        if isinstance(data, torch.Tensor) and data.dtype is torch.complex128:
            return data.to(torch.complex64)  # "the format has no complex128"
        return data


class Complex128AsComplex64(Wrapped):
    """Stores complex128 as complex64 and widens it back on load (precision silently lost).

    It does not claim ``dtype:complex128``. Family: loud refusal of unclaimed capabilities.
    """

    writer = planner_with(_Complex64)
    unclaimed: ClassVar[frozenset[str]] = frozenset({"dtype:complex128"})
    family = "unclaimed"


_FLOAT8 = (
    torch.float8_e4m3fn,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2,
    torch.float8_e5m2fnuz,
    torch.float8_e8m0fnu,
)


class _Uint8(SavePlannerProxy):
    def resolve_data(self, write_item: WriteItem) -> Any:
        data = self.inner.resolve_data(write_item)
        if isinstance(data, torch.Tensor) and data.dtype in _FLOAT8:
            return data.to(torch.uint8)  # converts values where it meant to reinterpret bits
        return data


class Float8ViaUint8(Wrapped):
    """Stores float8 tensors through uint8 by value conversion; the load reinterprets the bytes.

    It does not claim the float8 dtypes. Family: loud refusal of unclaimed capabilities.
    """

    base = "dcp_impl-fs"
    writer = planner_with(_Uint8)
    unclaimed: ClassVar[frozenset[str]] = frozenset(f"dtype:{str(d)[6:]}" for d in _FLOAT8)
    family = "unclaimed"
