"""Broken backends whose bug shows under ``dcp.async_save``: staging, background work, leaks.

Each is ``dcp_impl-fs`` with one bug of the kind users meet in asynchronous checkpointing;
each docstring says what it breaks and which property rejects it (family ``async``,
``spec_tests/test_async.py``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, ClassVar

import torch
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from spec_tests.selftest.wrap import Wrapped, WrappedWriter

__all__ = [
    "LeaksADescriptorPerSave",
    "MetadataBeforeData",
    "PooledStagingBuffers",
    "StagerDoesNotCopy",
    "SwallowsBackgroundError",
    "UnpicklableWriter",
]

_log = logging.getLogger(__name__)


class _Staging(WrappedWriter):
    """A writer that is its own ``AsyncStager`` (as torch's and dcp_impl's writers are)."""

    _synchronize_after_execute: bool = False

    @property
    def should_synchronize_after_execute(self) -> bool:
        """Staging blocks: nothing to synchronize."""
        return False

    def stage(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """The state dict async_save writes while training goes on."""
        raise NotImplementedError

    def synchronize_staging(self) -> None:
        """Nothing to wait for."""

    def close(self) -> None:
        """Nothing to release."""


class _NoCopy(_Staging):
    def stage(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        # "The tensors are on CPU already, so there is nothing to stage."
        return state_dict


class StagerDoesNotCopy(Wrapped):
    """The writer stages by returning the live state dict: CPU tensors are "already staged".

    Training's next step changes the tensors while the background save writes them.
    Family: async (``test_async_save_holds_values_at_call[own]``: the checkpoint holds
    bytes written after the call).
    """

    base = "dcp_impl-fs"
    writer = _NoCopy
    family = "async"


#: One staging buffer per (dtype, shape), shared by every save of the process.
_POOL: dict[tuple[torch.dtype, tuple[int, ...]], torch.Tensor] = {}


class _Pooled(_Staging):
    def stage(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        staged = {}
        for key, value in state_dict.items():
            if not isinstance(value, torch.Tensor):
                staged[key] = value
                continue
            # Buffers go back to the pool when staging completes, not when the upload that
            # reads them does: the next save's staging overwrites a buffer still being written.
            slot = (value.dtype, tuple(value.shape))
            if slot not in _POOL:
                _POOL[slot] = torch.empty_like(value, device="cpu")
            staged[key] = _POOL[slot].copy_(value)
        return staged


class PooledStagingBuffers(Wrapped):
    """Staging into a process-wide pool of (pinned) buffers, reused as soon as staging ends.

    Family: async (``test_overlapping_async_saves``: the first checkpoint holds the second
    save's values).
    """

    base = "dcp_impl-fs"
    writer = _Pooled
    family = "async"


_HIDDEN = ".uploading-"


class _Deferred(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        results = self.inner.write_data(plan, planner).wait()
        # "Upload" the data files in the background; the results are known already.
        names = sorted({r.storage_data.path for r in results})
        for name in names:
            os.replace(os.path.join(self.location, name), self._hidden(name))
        threading.Timer(0.5, self._publish, args=(names,)).start()
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def _hidden(self, name: str) -> str:
        return os.path.join(self.location, _HIDDEN + name)

    def _publish(self, names: list[str]) -> None:
        for name in names:
            os.replace(self._hidden(name), os.path.join(self.location, name))


class MetadataBeforeData(Wrapped):
    """The data files are uploaded in the background, and the metadata committed meanwhile.

    ``upload_completion`` (and a synchronous save) returns while the files are still on their
    way. Family: async (``test_async_save_holds_values_at_call``: a fresh reader right after
    completion finds data files missing).
    """

    base = "dcp_impl-fs"
    writer = _Deferred
    family = "async"


class _Swallowing(WrappedWriter):
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        future: Future[list[WriteResult]] = Future()

        def upload() -> None:
            try:
                future.set_result(self.inner.write_data(plan, planner).wait())
            except Exception:
                # "Logged for the on-call; the next checkpoint will retry."
                _log.exception("background checkpoint upload failed")
                future.set_result([])

        worker = threading.Thread(target=upload, name="upload")
        worker.start()
        worker.join()
        return future


class SwallowsBackgroundError(Wrapped):
    """The upload thread logs a failure and reports success with no results.

    Family: async (``test_async_background_error_reaches_caller``: upload_completion
    resolves though resolve_data raised).
    """

    base = "dcp_impl-fs"
    writer = _Swallowing
    family = "async"


class _Locked(WrappedWriter):
    def __init__(self, inner: Any, location: str) -> None:
        super().__init__(inner, location)
        # A client connection guarded by a lock, made once and kept for every save.
        self.client_lock = threading.Lock()


class UnpicklableWriter(Wrapped):
    """The writer holds a lock (a client connection), so it cannot be pickled.

    async_save's PROCESS mode pickles the writer into torch's daemon. Family: async
    (``test_process_mode_async_save``).
    """

    base = "dcp_impl-fs"
    writer = _Locked
    family = "async"


class _Leaky(WrappedWriter):
    leaked: ClassVar[list[int]] = []

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        self.inner.finish(metadata=metadata, results=results)
        # The directory is opened to fsync the new entries, and never closed.
        fd = os.open(self.location, os.O_RDONLY)
        os.fsync(fd)
        self.leaked.append(fd)


class LeaksADescriptorPerSave(Wrapped):
    """Every save leaves the checkpoint directory's descriptor open.

    Family: async (``test_async_saves_do_not_leak``: descriptors grow by one per save).
    """

    base = "dcp_impl-fs"
    writer = _Leaky
    family = "async"
