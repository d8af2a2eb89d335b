"""FileSystemReader: loads what FileSystemWriter saved, through dcp_impl.transfer.read_items."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from torch.distributed.checkpoint.metadata import (
    Metadata,
)
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner
from torch.distributed.checkpoint.storage import StorageReader
from torch.futures import Future

from dcp_impl import _torch_options as options
from dcp_impl import metadata as metadata_format
from dcp_impl import transfer
from dcp_impl._backend import StoreReading
from dcp_impl.errors import CheckpointNotFoundError
from dcp_impl.filesystem import _ranklocal
from dcp_impl.filesystem._writer import METADATA_FILE
from dcp_impl.safe_load import DEFAULT_MAX_EXPANSION, PicklePolicy, SafeGlobal
from dcp_impl.store import Store, open_store

__all__ = ["FileSystemReader"]


class FileSystemReader(StoreReading, StorageReader):
    """Load a checkpoint written by :class:`FileSystemWriter`, into any layout.

    Reads take only the bytes each destination needs, straight into it
    (:func:`dcp_impl.transfer.read_items`). The parameters up to ``_extension_registry`` are
    torch's ``FileSystemReader``'s.

    Args:
        path: the directory, an fsspec URL (``s3://bucket/prefix``) or a
            :class:`~dcp_impl.store.Store`.
        _extension_registry: only None (dcp_impl checkpoints carry no stream transforms).
        thread_count: items read in parallel (default: 2 for local directories, more for
            object stores: ``Store.read_threads``).
        verify: which stored checksums are checked before any byte is used. ``True``
            (default): every piece (1 MiB of an item, docs/format.md rule D15) any byte is
            taken from; a partial (resharded) load reads and hashes the pieces it touches,
            and only those (the whole item for a version-2 checkpoint's whole-item
            checksums). ``"whole"``: items a load reads whole; a partial read fetches only
            its byte ranges, unverified. ``False``: none.
        trust_pickle: hand non-tensor entries to the load planner (whose ``torch.load`` runs
            any code they carry) unchecked. Default False: each must load under
            ``torch.load(weights_only=True)`` rules or raises ``UnsafeCheckpointError``
            (:mod:`dcp_impl.safe_load`, docs/security.md). Only for trusted checkpoints.
        safe_globals: more globals such entries may use, as for
            ``torch.serialization.add_safe_globals``.
        max_bytes_expansion: the objects a checked entry unpickles into may take this many
            times its stored size in memory (plus 1 MiB), else ``UnsafeCheckpointError``
            (default ``dcp_impl.safe_load.DEFAULT_MAX_EXPANSION``, 128).
        max_inflight_bytes: a cap on the host memory a load holds in flight beyond the
            state dict's tensors: staging and coalesced read buffers, scratch, the copies an
            object store's reads make, pinned buffers for CUDA (at least 1 MiB; default None,
            no cap). Reads wait for memory in turn and are cut to fit, files are read
            instead of mapped (mapped pages count in resident memory), so the load's peak
            stays within the cap plus one buffer (a stored item read whole to be verified,
            where it is larger than the cap). Slower where the cap is small.
        convert_dtypes: copy stored tensors into state dict tensors of another dtype,
            converting them (torch's readers always do, silently: pytorch#187138). Default
            False: such a destination raises ``LayoutMismatchError`` before any byte is read.
        storage_options: passed to fsspec for URLs (credentials, endpoint).
        share_reads: ``"shm"``: in a multi-process load, a stored item that several ranks of
            one host need (replicated state, a chunk a reshard splits) is read from storage
            once, by one of them, and the others take it from the host's shared memory
            (``/dev/shm``), verified as reads from storage are. Each rank's ``read_data``
            then waits for the items its peers read; no collective is added. Default None:
            every rank reads what it needs itself. See docs/architecture.md.
        share_timeout: with ``share_reads``, seconds a rank waits for an item a peer reads
            before :class:`~dcp_impl.errors.SharedReadTimeoutError` (default 600).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Store,
        _extension_registry: object | None = None,
        *,
        thread_count: int | None = None,
        verify: transfer.Verify = True,
        trust_pickle: bool = False,
        safe_globals: Sequence[SafeGlobal] = (),
        max_bytes_expansion: float = DEFAULT_MAX_EXPANSION,
        storage_options: Mapping[str, Any] | None = None,
        max_inflight_bytes: int | None = None,
        convert_dtypes: bool = False,
        share_reads: transfer.ShareReads = None,
        share_timeout: float = transfer.DEFAULT_SHARE_TIMEOUT,
    ) -> None:
        super().__init__()
        options.check_extension_registry(type(self).__name__, _extension_registry)
        self._configure(
            thread_count=thread_count,
            verify=verify,
            pickle_policy=PicklePolicy(trust_pickle, tuple(safe_globals), max_bytes_expansion),
            max_inflight_bytes=max_inflight_bytes,
            convert_dtypes=convert_dtypes,
            share_reads=share_reads,
            share_timeout=share_timeout,
        )
        self.storage_options = storage_options
        self.store = open_store(path, storage_options)
        self.load_id = uuid.uuid4().hex

    def reset(
        self, checkpoint_id: str | os.PathLike[str] | Store | None = None, **kwargs: Any
    ) -> None:
        # docstring inherited
        self._retarget(checkpoint_id)
        self.load_id = uuid.uuid4().hex
        self._locator = None

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """The checkpoint's metadata: ``.metadata.json``, else every rank's metadata file of a
        collective-free save merged into one (for any ``rank=``: each rank may need chunks
        another saved)."""
        try:
            text = self.store.read_small(METADATA_FILE, metadata_format.MAX_METADATA_BYTES)
        except FileNotFoundError as err:
            merged = _ranklocal.read_merged(self.store)
            if merged is None:
                raise CheckpointNotFoundError(
                    f"{self.store.url}: expected a committed checkpoint ({METADATA_FILE}, or "
                    f"{_ranklocal.rank_metadata_file(0)}... of a collective-free save), "
                    "found none"
                ) from err
            return metadata_format.with_load_id(merged, self.load_id)
        return metadata_format.with_load_id(metadata_format.loads(text), self.load_id)

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        # docstring inherited
        self._set_up(metadata)

    def prepare_local_plan(self, plan: LoadPlan, **kwargs: Any) -> LoadPlan:
        # docstring inherited
        return self._share_local(plan)

    def prepare_global_plan(self, plans: list[LoadPlan], **kwargs: Any) -> list[LoadPlan]:
        # docstring inherited
        if self.share_reads is None:
            return plans
        return self._share_global(plans, self._locate)

    def read_data(self, plan: LoadPlan, planner: LoadPlanner, **kwargs: Any) -> Future[None]:
        # docstring inherited
        return self._read_all(plan, planner, self._locate)
