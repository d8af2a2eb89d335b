"""HuggingFaceWriter and HuggingFaceReader: the storage classes of the HuggingFace backend.

The folder layout is torch's (``torch.distributed.checkpoint.hf_storage``) with
transformers' names: standard safetensors files named ``model-0000i-of-0000N.safetensors``
plus ``model.safetensors.index.json`` (one file: ``model.safetensors``, no index), or
with ``save_distributed=True`` one ``shard-0000s-model-0000i-of-0000N.safetensors`` per
rank whose ``__metadata__`` carries ``DCP_SHARDING_INFO``. Next to them,
``dcp_metadata.json`` holds the full DCP Metadata in dcp_impl's JSON format; it is written
last and is the commit point. docs/huggingface.md gives the rules; the package's
``__init__`` names the modules behind these classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from torch.distributed.checkpoint.metadata import (
    Metadata,
    StorageMeta,
)
from torch.distributed.checkpoint.planner import (
    LoadPlan,
    LoadPlanner,
    SavePlan,
    SavePlanner,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from dcp_impl import dtypes, transfer
from dcp_impl import metadata as dcp_metadata
from dcp_impl._backend import (
    StoreLocated,
    StoreReading,
    nothing_committed,
)
from dcp_impl._pool import parallel_map
from dcp_impl._torch_options import check_count
from dcp_impl.errors import (
    ConcurrentSaveError,
    InvalidMetadataError,
    OverwriteRefusedError,
    UnknownDtypeError,
    UnsupportedError,
)
from dcp_impl.huggingface._commit import commit
from dcp_impl.huggingface._consolidate import consolidate
from dcp_impl.huggingface._folder import (
    BYTES_FILE,
    SIDECAR_NAME,
    held_files,
    index_json,
    is_folder,
    read_folder,
    temp_name,
)
from dcp_impl.huggingface._journal import JOURNAL_NAME
from dcp_impl.huggingface._plan import (
    Assignment,
    check_mapping,
    distributed_names,
    file_index,
    whole_tensor_names,
)
from dcp_impl.huggingface._write import FileWriter, group_by_file
from dcp_impl.metadata import MAX_METADATA_BYTES, dumps, with_load_id
from dcp_impl.safe_load import DEFAULT_MAX_EXPANSION, PicklePolicy, SafeGlobal
from dcp_impl.store import Store, open_store, save_stamp

__all__ = ["HuggingFaceReader", "HuggingFaceWriter", "consolidate", "is_huggingface_folder"]

SHARDED_DIR = "sharded"


def is_huggingface_folder(
    path: str | os.PathLike[str] | Store, storage_options: Mapping[str, Any] | None = None
) -> bool:
    """Whether ``path`` holds a folder :class:`HuggingFaceReader` can try: a sidecar, an
    index or safetensors files (for ``python -m dcp_impl``).

    Args:
        path: a directory, an fsspec URL or a :class:`~dcp_impl.store.Store`.
        storage_options: passed to fsspec for URLs (credentials, endpoint).
    """
    return is_folder(open_store(path, storage_options))


class HuggingFaceWriter(StoreLocated, StorageWriter):
    """Save a DCP checkpoint as a HuggingFace safetensors folder.

    The parameters up to ``thread_count_consolidation`` are torch's
    ``HuggingFaceStorageWriter``'s, by name and position, with torch's meaning.

    Args:
        path: the folder (created if missing), an fsspec URL (``s3://bucket/prefix``) or a
            :class:`~dcp_impl.store.Store`.
        fqn_to_index_mapping: tensor name -> file number ``i`` of ``model-0000i-of-0000N``
            (``N`` is the largest number); every tensor must have one. Default: one file,
            ``model.safetensors``, as transformers' ``save_pretrained`` names it.
        thread_count: files written in parallel per rank.
        save_distributed: every rank writes its own chunks to ``shard-0000s-...`` files.
            Without it every tensor must be saved whole, by one rank.
        enable_consolidation: with ``save_distributed``, write the shards to ``path/sharded``
            and then full tensors to ``path`` (see :func:`consolidate`).
        thread_count_consolidation: files consolidation writes in parallel.
        consolidate: the same as ``enable_consolidation`` (dcp_impl's earlier name).
        sync_files: fsync data files and the commit (default True).
        overwrite: False refuses a folder that already holds a checkpoint or model weights
            (:class:`~dcp_impl.errors.OverwriteRefusedError`) before anything is written.
        storage_options: passed to fsspec for URLs (credentials, endpoint).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Store,
        fqn_to_index_mapping: Mapping[str, int] | None = None,
        thread_count: int = 1,
        save_distributed: bool = False,
        enable_consolidation: bool = False,
        thread_count_consolidation: int = 1,
        *,
        consolidate: bool = False,
        sync_files: bool = True,
        overwrite: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_count(owner, "thread_count", thread_count)
        check_count(owner, "thread_count_consolidation", thread_count_consolidation)
        enable_consolidation = enable_consolidation or consolidate
        if enable_consolidation and not save_distributed:
            raise ValueError(
                f"{owner}: enable_consolidation=True expected save_distributed=True, got False "
                "(whole tensors need no consolidation)"
            )
        if fqn_to_index_mapping is not None:
            check_mapping(fqn_to_index_mapping)
        self.mapping = dict(fqn_to_index_mapping) if fqn_to_index_mapping is not None else None
        self.save_distributed = save_distributed
        self.enable_consolidation = enable_consolidation
        self.thread_count = thread_count
        self.thread_count_consolidation = thread_count_consolidation
        self.sync_files = sync_files
        self.overwrite = overwrite
        self.storage_options = storage_options
        self.reset(path)

    def reset(
        self, checkpoint_id: str | os.PathLike[str] | Store | None = None, **kwargs: Any
    ) -> None:
        # docstring inherited
        self._retarget(checkpoint_id)
        self.data_dir = self.store.child(SHARDED_DIR) if self.enable_consolidation else self.store
        self.save_id = save_stamp()
        # The marker this rank's files were written under: the coordinator's save id, from
        # the plan. A caching planner replays an earlier save's final plan, and with it that
        # save's id, so the commit takes the marker the files have, not self.save_id.
        self._written_id: str | None = None
        self.is_coordinator = False

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        # docstring inherited
        self.is_coordinator = is_coordinator
        # One rank decides, before any rank writes, so every rank sees the same answer.
        if is_coordinator and not self.overwrite:
            held = [*held_files(self.store), *held_files(self.data_dir)]
            if held:
                raise OverwriteRefusedError(
                    f"{self.store.url}: Checkpoint already exists and overwrite=False: expected "
                    f"no checkpoint or model weights, found {held[:5]}"
                )
        self.data_dir.make_dirs()

    def prepare_local_plan(self, plan: SavePlan, *args: Any, **kwargs: Any) -> SavePlan:
        """Refuse, before anything is written, what a safetensors folder cannot hold."""
        for item in plan.items:
            if item.type == WriteItemType.BYTE_IO:
                continue
            fqn = item.index.fqn
            if fqn == "__metadata__":
                raise UnsupportedError(f"tensor name {fqn!r} is reserved by the safetensors format")
            if item.tensor_data is None:
                raise InvalidMetadataError(f"write item for tensor {fqn!r} has no tensor_data")
            try:
                info = dtypes.by_torch(item.tensor_data.properties.dtype)
            except UnknownDtypeError as err:
                raise UnsupportedError(f"tensor {fqn!r}: {err}") from err
            if info.safetensors is None:
                raise UnsupportedError(
                    f"tensor {fqn!r}: dtype {info.name} has no safetensors equivalent; expected "
                    f"one of {sorted(r.name for r in dtypes.DTYPES if r.safetensors)}"
                )
            file_index(self.mapping, fqn)
        return plan

    def prepare_global_plan(
        self, plans: list[SavePlan], *args: Any, **kwargs: Any
    ) -> list[SavePlan]:
        """Give every rank its file names; refuse layouts that would clobber files."""
        if self.save_distributed:
            names = distributed_names(plans, self.mapping)
        else:
            names = whole_tensor_names(plans, self.mapping)
        return [
            dataclasses.replace(
                plan,
                storage_data=Assignment(self.save_id, names[rank], BYTES_FILE.format(rank + 1)),
            )
            for rank, plan in enumerate(plans)
        ]

    def write_data(
        self, plan: SavePlan, planner: SavePlanner, *args: Any, **kwargs: Any
    ) -> Future[list[WriteResult]]:
        # docstring inherited
        assignment = plan.storage_data
        if not isinstance(assignment, Assignment):
            raise InvalidMetadataError(
                f"write_data: expected a plan from prepare_global_plan, found storage_data "
                f"{type(assignment).__name__}"
            )
        jobs = group_by_file(plan.items, assignment)
        self._written_id = assignment.save_id
        temps = [temp_name(name, assignment.save_id) for name, _ in jobs]
        with nothing_committed(self.data_dir, temps, len(plan.items)):
            per_file = parallel_map(
                jobs,
                lambda: FileWriter(self.data_dir, assignment.save_id, planner, self.sync_files),
                thread_count=self.thread_count,
            )
        fut: Future[list[WriteResult]] = Future()
        fut.set_result([result for results in per_file for result in results])
        return fut

    def finish(
        self, metadata: Metadata, results: list[list[WriteResult]], *args: Any, **kwargs: Any
    ) -> None:
        """Move the new files into place, then write the index and the sidecar (the commit)."""
        locations = {r.index: r.storage_data for rank in results for r in rank}
        committed = dataclasses.replace(metadata, storage_data=locations)
        dcp_metadata.validate(
            committed
        )  # as the filesystem writer: no holes or overlaps get committed
        sidecar = dumps(committed)  # fails, before anything moves, on what the format cannot hold
        index = None if self.save_distributed else index_json(committed)
        files = {loc.path for loc in locations.values()}
        written = self.save_id if self._written_id is None else self._written_id
        commit(self.data_dir, written, files, sidecar, index, sync=self.sync_files)
        self._written_id = None
        # The next save through this instance must not share this one's file marker.
        self.save_id = save_stamp()
        if self.enable_consolidation:
            consolidate(
                self.data_dir,
                self.store,
                self.mapping,
                sync_files=self.sync_files,
                thread_count=self.thread_count_consolidation,
            )

    def storage_meta(self) -> StorageMeta | None:
        # docstring inherited
        return StorageMeta(checkpoint_id=self.checkpoint_id, save_id=self.save_id)


class HuggingFaceReader(StoreReading, StorageReader):
    """Load a HuggingFace safetensors folder written by this backend, torch's, ``save_file`` or
    transformers' ``save_pretrained``. The parameters up to ``thread_count`` are torch's
    ``HuggingFaceStorageReader``'s. Without a current sidecar, files are chosen as
    transformers chooses them: ``model.safetensors``, else the index, else every file.

    Args:
        path: the folder, an fsspec URL (``s3://bucket/prefix``) or a
            :class:`~dcp_impl.store.Store`.
        thread_count: items read in parallel (default: 2 for local folders, more for object
            stores: ``Store.read_threads``).
        verify: which stored checksums (folders written by this backend) are checked before
            any byte is used. ``True`` (default): every piece (1 MiB of an item,
            docs/format.md rule D15) any byte is taken from; a partial (resharded) load
            reads and hashes the pieces it touches, and only those (the whole item where
            the sidecar holds whole-item checksums). ``"whole"``: items a load reads whole;
            a partial read fetches only its byte ranges, unverified. ``False``: none.
        storage_options: passed to fsspec for URLs (credentials, endpoint).
        trust_pickle, safe_globals, max_bytes_expansion, max_inflight_bytes, convert_dtypes,
            share_reads, share_timeout: as :class:`~dcp_impl.FileSystemReader`'s.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Store,
        thread_count: int | None = None,
        *,
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
        self.reset(path)

    def reset(
        self, checkpoint_id: str | os.PathLike[str] | Store | None = None, **kwargs: Any
    ) -> None:
        # docstring inherited
        self._retarget(checkpoint_id)
        self.load_id = uuid.uuid4().hex
        self._locator = None
        self._seen: tuple[str | None, str | None] | None = None

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        # docstring inherited
        # Taken before the metadata: a commit after this point is seen when the load ends.
        self._seen = _commit_state(self.store)
        return with_load_id(read_folder(self.store), self.load_id)

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        # docstring inherited
        self._set_up(metadata)
        if self._seen is None:  # a rank that did not read the metadata itself
            self._seen = _commit_state(self.store)

    def prepare_local_plan(self, plan: LoadPlan, *args: Any, **kwargs: Any) -> LoadPlan:
        # docstring inherited
        return self._share_local(plan)

    def prepare_global_plan(
        self, plans: list[LoadPlan], *args: Any, **kwargs: Any
    ) -> list[LoadPlan]:
        # docstring inherited
        return self._share_global(plans, self._locate)

    def read_data(
        self, plan: LoadPlan, planner: LoadPlanner, *args: Any, **kwargs: Any
    ) -> Future[None]:
        # docstring inherited
        return self._read_all(plan, planner, self._locate, self._check_unchanged)

    def _check_unchanged(self) -> None:
        # The file names are fixed: a save that committed while this load read may have
        # replaced some of its files, whatever ``verify`` says (docs/huggingface.md).
        if self._seen is not None and _commit_state(self.store) != self._seen:
            raise ConcurrentSaveError(
                f"{self.store.url}: expected the folder unchanged while loading, found a save "
                "committed meanwhile; the loaded values may mix two saves: load again"
            )


def _commit_state(folder: Store) -> tuple[str | None, str | None]:
    """Digests of the journal and the sidecar: any commit changes one of them for good."""
    digests: list[str | None] = []
    for name in (JOURNAL_NAME, SIDECAR_NAME):
        try:
            data = folder.read_small(name, MAX_METADATA_BYTES)
        except FileNotFoundError:
            digests.append(None)
        else:
            digests.append(hashlib.blake2b(data, digest_size=16).hexdigest())
    return digests[0], digests[1]
