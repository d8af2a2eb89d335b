"""HuggingFace safetensors backend: HuggingFaceWriter, HuggingFaceReader, consolidate().

The folder layout is torch's (``torch.distributed.checkpoint.hf_storage``): standard
safetensors files named ``model-0000i-of-0000N.safetensors`` plus
``model.safetensors.index.json``, or with ``save_distributed=True`` one
``shard-0000s-model-0000i-of-0000N.safetensors`` per rank whose ``__metadata__`` carries
``DCP_SHARDING_INFO``. Next to them, ``dcp_metadata.json`` holds the full DCP Metadata in
dcp_impl's JSON format; it is written last and is the commit point. docs/huggingface.md
gives the rules; :mod:`dcp_impl._safetensors` holds the header codec, :mod:`dcp_impl._hf_folder`
reads folders and commits saves.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from dcp_impl import _io, dtypes
from dcp_impl._hf_folder import (
    BYTES_FILE,
    Stored,
    commit,
    file_name,
    index_json,
    is_folder,
    read_folder,
    stored_items,
    temp_name,
    unlink,
)
from dcp_impl._safetensors import (
    DCP_VERSION_KEY,
    FORMAT_KEY,
    SAVE_ID_KEY,
    SAVED_OFFSETS_KEY,
    SHARDING_INFO_KEY,
    encode_header,
)
from dcp_impl.errors import (
    InvalidMetadataError,
    LayoutMismatchError,
    UnknownDtypeError,
    UnsupportedError,
    WriteFailedError,
)
from dcp_impl.layout import Box, first_overlap, holes
from dcp_impl.metadata import ItemLocation, dumps

__all__ = ["HuggingFaceReader", "HuggingFaceWriter", "consolidate", "is_huggingface_folder"]

SHARDED_DIR = "sharded"


@dataclasses.dataclass(frozen=True, slots=True)
class _Assignment:
    """What the coordinator tells one rank to write: SavePlan.storage_data of a global plan."""

    save_id: str
    files: Mapping[MetadataIndex, str]
    """Tensor chunk -> name of the safetensors file that holds it."""
    bytes_file: str


def is_huggingface_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a folder :class:`HuggingFaceReader` can try: a sidecar, an index
    or safetensors files (for ``python -m dcp_impl`` to recognise the kind)."""
    return is_folder(path)


class HuggingFaceWriter(StorageWriter):
    """Save a DCP checkpoint as a HuggingFace safetensors folder.

    Args:
        path: the folder (created if missing).
        fqn_to_index_mapping: tensor name -> file number ``i`` of ``model-0000i-of-0000N``
            (``N`` is the largest number); every tensor must have one. Default: one file.
        save_distributed: every rank writes its own chunks to ``shard-0000s-...`` files.
            Without it every tensor must be saved whole, by one rank.
        consolidate: with ``save_distributed``, write the shards to ``path/sharded`` and then
            full tensors to ``path`` (see :func:`consolidate`).
        thread_count: files written in parallel per rank.
        sync_files: fsync data files and the commit (default True).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fqn_to_index_mapping: Mapping[str, int] | None = None,
        save_distributed: bool = False,
        consolidate: bool = False,
        thread_count: int = 1,
        sync_files: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if consolidate and not save_distributed:
            raise ValueError(
                "consolidate=True needs save_distributed=True: whole tensors need none"
            )
        if fqn_to_index_mapping is not None:
            _check_mapping(fqn_to_index_mapping)
        self.mapping = dict(fqn_to_index_mapping) if fqn_to_index_mapping is not None else None
        self.save_distributed = save_distributed
        self.consolidate = consolidate
        self.thread_count = thread_count
        self.sync_files = sync_files
        self.reset(path)

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        # docstring inherited
        if checkpoint_id is not None:
            self.path = Path(checkpoint_id)
        self.data_dir = self.path / SHARDED_DIR if self.consolidate else self.path
        self.save_id = uuid.uuid4().hex
        self.is_coordinator = False

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        # docstring inherited
        self.is_coordinator = is_coordinator
        self.data_dir.mkdir(parents=True, exist_ok=True)

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
            _file_index(self.mapping, fqn)
        return plan

    def prepare_global_plan(
        self, plans: list[SavePlan], *args: Any, **kwargs: Any
    ) -> list[SavePlan]:
        """Give every rank its file names; refuse layouts that would clobber files."""
        if self.save_distributed:
            names = _distributed_names(plans, self.mapping)
        else:
            names = _whole_tensor_names(plans, self.mapping)
        return [
            dataclasses.replace(
                plan,
                storage_data=_Assignment(self.save_id, names[rank], BYTES_FILE.format(rank + 1)),
            )
            for rank, plan in enumerate(plans)
        ]

    def write_data(
        self, plan: SavePlan, planner: SavePlanner, *args: Any, **kwargs: Any
    ) -> Future[list[WriteResult]]:
        # docstring inherited
        assignment = plan.storage_data
        if not isinstance(assignment, _Assignment):
            raise InvalidMetadataError(
                f"write_data: expected a plan from prepare_global_plan, found storage_data "
                f"{type(assignment).__name__}"
            )
        jobs = _group_by_file(plan.items, assignment)
        worker = _FileWriter(self.data_dir, assignment.save_id, planner, self.sync_files)
        try:
            per_file = _io.parallel_map(jobs, lambda: worker, thread_count=self.thread_count)
        except BaseException:
            for name, _ in jobs:
                unlink(self.data_dir / temp_name(name, assignment.save_id))
            raise
        fut: Future[list[WriteResult]] = Future()
        fut.set_result([result for results in per_file for result in results])
        return fut

    def finish(
        self, metadata: Metadata, results: list[list[WriteResult]], *args: Any, **kwargs: Any
    ) -> None:
        """Move the new files into place, then write the index and the sidecar (the commit)."""
        locations = {r.index: r.storage_data for rank in results for r in rank}
        committed = dataclasses.replace(metadata, storage_data=locations)
        sidecar = dumps(committed)  # fails, before anything moves, on what the format cannot hold
        index = None if self.save_distributed else index_json(committed)
        commit(self.data_dir, self.save_id, sidecar, index, sync=self.sync_files)
        # The next save through this instance must not share this one's file marker.
        self.save_id = uuid.uuid4().hex
        if self.consolidate:
            consolidate(self.data_dir, self.path, self.mapping, sync_files=self.sync_files)

    def storage_meta(self) -> StorageMeta | None:
        # docstring inherited
        return StorageMeta(checkpoint_id=str(self.path), save_id=self.save_id)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        # docstring inherited
        return _is_local_path(checkpoint_id)


class HuggingFaceReader(StorageReader):
    """Load a HuggingFace safetensors folder written by this backend, torch's, or ``save_file``.

    Args:
        path: the folder.
        thread_count: items read in parallel.
        verify: which stored checksums (folders written by this backend) are checked before
            any byte is used. ``"whole"`` (default): items a load reads whole; a partial
            (resharded) read fetches only its byte ranges, unverified. ``True``: every item,
            reading whole items for partial loads. ``False``: none.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        thread_count: int = 1,
        verify: bool | Literal["whole"] = "whole",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.thread_count = thread_count
        self.verify = verify
        self.reset(path)

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        # docstring inherited
        if checkpoint_id is not None:
            self.path = Path(checkpoint_id)
        self.load_id = uuid.uuid4().hex
        self._stored: dict[MetadataIndex, Stored] = {}

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        # docstring inherited
        metadata = read_folder(self.path)
        if metadata.storage_meta is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        # docstring inherited
        self._stored = stored_items(metadata)

    def prepare_local_plan(self, plan: LoadPlan, *args: Any, **kwargs: Any) -> LoadPlan:
        # docstring inherited
        return plan

    def prepare_global_plan(
        self, plans: list[LoadPlan], *args: Any, **kwargs: Any
    ) -> list[LoadPlan]:
        # docstring inherited
        return plans

    def read_data(
        self, plan: LoadPlan, planner: LoadPlanner, *args: Any, **kwargs: Any
    ) -> Future[None]:
        # docstring inherited
        targets: dict[MetadataIndex, list[_io.Target]] = {}
        commits: list[tuple[ReadItem, torch.Tensor]] = []
        for req in plan.items:
            stored = self._lookup(req)
            dest = self._destination(req, stored, planner)
            sub = (
                Box.full(stored.sizes)
                if req.type == LoadItemType.BYTE_IO
                else Box(tuple(req.storage_offsets), tuple(req.lengths))
            )
            targets.setdefault(req.storage_index, []).append(_io.Target(sub, dest))
            commits.append((req, dest))
        requests = [
            stored.request(
                self.path, tuple(items), self._checksum(stored, items), label=repr(key.fqn)
            )
            for key, items in targets.items()
            for stored in (self._stored[key],)
        ]
        _io.read_into(requests, thread_count=self.thread_count, verify=bool(self.verify))
        for req, dest in commits:
            if req.type == LoadItemType.BYTE_IO:
                planner.load_bytes(req, io.BytesIO(dest.numpy().tobytes()))
            else:
                planner.commit_tensor(req, dest)
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        # docstring inherited
        return _is_local_path(checkpoint_id)

    def _checksum(self, stored: Stored, targets: list[_io.Target]) -> str | None:
        """The checksum to verify, or None where verifying would read bytes nobody asked for."""
        whole = Box.full(stored.sizes)
        if self.verify == "whole" and all(t.sub != whole for t in targets):
            return None
        return stored.location.checksum

    def _lookup(self, req: ReadItem) -> Stored:
        stored = self._stored.get(req.storage_index)
        if stored is None:
            raise LayoutMismatchError(
                f"{self.path}: requested item {req.storage_index.fqn!r} at offsets "
                f"{tuple(req.storage_index.offset or ())} is not in the checkpoint"
            )
        return stored

    @staticmethod
    def _destination(req: ReadItem, stored: Stored, planner: LoadPlanner) -> torch.Tensor:
        if req.type == LoadItemType.BYTE_IO:
            return torch.empty(stored.sizes, dtype=torch.uint8)
        dest = planner.resolve_tensor(req).detach()
        if tuple(dest.shape) != tuple(req.lengths):
            raise LayoutMismatchError(
                f"tensor {req.dest_index.fqn!r}: destination shape expected "
                f"{tuple(req.lengths)}, found {tuple(dest.shape)}"
            )
        return dest


# --------------------------------------------------------------------------- planning


def _check_mapping(mapping: Mapping[str, int]) -> None:
    for fqn, index in mapping.items():
        if type(index) is not int or index < 1:
            raise ValueError(
                f"fqn_to_index_mapping[{fqn!r}]: expected a file number >= 1, found {index!r}"
            )


def _file_index(mapping: Mapping[str, int] | None, fqn: str) -> int:
    if mapping is None:
        return 1
    if fqn not in mapping:
        raise LayoutMismatchError(
            f"tensor {fqn!r}: expected a file number in fqn_to_index_mapping, found none"
        )
    return mapping[fqn]


def _file_count(mapping: Mapping[str, int] | None) -> int:
    return max(mapping.values(), default=1) if mapping else 1


def _tensor_items(plan: SavePlan) -> list[WriteItem]:
    return [item for item in plan.items if item.type != WriteItemType.BYTE_IO]


def _whole_tensor_names(
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
            assert item.tensor_data is not None  # prepare_local_plan checked it
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
        buckets.setdefault((_file_index(mapping, fqn), rank), []).append(item.index)
    # torch names every rank's file model-i-of-N, so ranks overwrite each other; where ranks
    # share a file number, number the (file, rank) pairs 1..K instead. The index points to them.
    if len({index for index, _ in buckets}) == len(buckets):
        numbers = {key: key[0] for key in buckets}
        count = _file_count(mapping)
    else:
        numbers = {key: n for n, key in enumerate(sorted(buckets), start=1)}
        count = len(buckets)
    names: list[dict[MetadataIndex, str]] = [{} for _ in plans]
    for (index, rank), keys in buckets.items():
        for key in keys:
            names[rank][key] = file_name(numbers[index, rank], count)
    return names


def _distributed_names(
    plans: Sequence[SavePlan], mapping: Mapping[str, int] | None
) -> list[dict[MetadataIndex, str]]:
    """``shard-s-model-i-of-N`` names: rank r writes shard r+1; its k-th extra chunk of one
    tensor goes to an extra shard numbered after the ranks (a file holds one entry per name)."""
    count = _file_count(mapping)
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
            mine[item.index] = file_name(_file_index(mapping, item.index.fqn), count, shards[slot])
        names.append(mine)
    return names


# --------------------------------------------------------------------------- writing


def _group_by_file(
    items: Sequence[WriteItem], assignment: _Assignment
) -> list[tuple[str, list[WriteItem]]]:
    groups: dict[str, list[WriteItem]] = {}
    for item in items:
        if item.type == WriteItemType.BYTE_IO:
            name = assignment.bytes_file
        else:
            name = assignment.files.get(item.index, "")
            if not name:
                raise InvalidMetadataError(
                    f"write_data: tensor {item.index.fqn!r} at {tuple(item.index.offset or ())} "
                    "was not in the global plan"
                )
        groups.setdefault(name, []).append(item)
    return list(groups.items())


class _FileWriter:
    """Writes one file per call; shared by the I/O threads (it holds no per-thread state)."""

    def __init__(self, directory: Path, save_id: str, planner: SavePlanner, sync: bool) -> None:
        self.directory = directory
        self.save_id = save_id
        self.planner = planner
        self.sync = sync

    def __call__(self, job: tuple[str, list[WriteItem]]) -> list[WriteResult]:
        name, items = job
        path = self.directory / temp_name(name, self.save_id)
        try:
            with _io.DataFileWriter(path, sync=self.sync) as out:
                if name.endswith(".bin"):
                    return [self._write_bytes(out, name, item) for item in items]
                return self._write_tensors(out, name, items)
        except OSError as err:
            raise WriteFailedError(f"{path}: writing {name} failed: {err}") from err

    def _write_tensors(
        self, out: _io.DataFileWriter, name: str, items: list[WriteItem]
    ) -> list[WriteResult]:
        # Widest dtypes first, as safetensors orders them, so each tensor starts aligned.
        items = sorted(items, key=lambda it: (-_info(it).itemsize, it.index.fqn))
        sharding = {it.index.fqn: {SAVED_OFFSETS_KEY: list(_chunk(it).offsets)} for it in items}
        header, _ = encode_header(
            [(it.index.fqn, _info(it), _chunk(it).sizes) for it in items],
            {
                FORMAT_KEY: "pt",
                SHARDING_INFO_KEY: json.dumps(sharding, ensure_ascii=False),
                DCP_VERSION_KEY: "1.0",
                SAVE_ID_KEY: self.save_id,
            },
        )
        out.write_bytes(header)
        results = []
        for item in items:
            tensor = self.planner.resolve_data(item)
            tensor = _check_tensor(item, tensor)
            # _io.tensor_bytes cannot view an empty tensor with odd strides; it has no bytes.
            stored = out.write_tensor(tensor) if tensor.numel() else out.write_bytes(b"")
            location = ItemLocation(name, stored.offset, stored.length, stored.checksum)
            results.append(WriteResult(item.index, stored.length, location))
        return results

    def _write_bytes(self, out: _io.DataFileWriter, name: str, item: WriteItem) -> WriteResult:
        data = self.planner.resolve_data(item)
        if not isinstance(data, io.BytesIO):
            raise UnsupportedError(
                f"entry {item.index.fqn!r}: expected io.BytesIO, found {type(data).__name__}"
            )
        stored = out.write_bytes(data.getbuffer())
        location = ItemLocation(name, stored.offset, stored.length, stored.checksum)
        return WriteResult(item.index, stored.length, location)

    def close(self) -> None:
        pass


def _chunk(item: WriteItem) -> Box:
    assert item.tensor_data is not None  # prepare_local_plan checked it
    return Box.of(item.tensor_data.chunk)


def _info(item: WriteItem) -> dtypes.DtypeInfo:
    assert item.tensor_data is not None  # prepare_local_plan checked it
    return dtypes.by_torch(item.tensor_data.properties.dtype)


def _check_tensor(item: WriteItem, tensor: object) -> torch.Tensor:
    """The planner must hand over exactly the planned chunk: never write other bytes."""
    if not isinstance(tensor, torch.Tensor):
        raise UnsupportedError(
            f"tensor {item.index.fqn!r}: expected a torch.Tensor, found {type(tensor).__name__}"
        )
    expected = (_info(item).torch_dtype, _chunk(item).sizes)
    found = (tensor.dtype, tuple(tensor.shape))
    if found != expected:
        raise LayoutMismatchError(
            f"tensor {item.index.fqn!r}: expected dtype/shape {expected}, found {found}"
        )
    return tensor


def _is_local_path(checkpoint_id: object) -> bool:
    try:
        text = os.fspath(checkpoint_id)  # type: ignore[call-overload]
    except TypeError:
        return False
    return isinstance(text, str) and bool(text) and "://" not in text and "\0" not in text


# --------------------------------------------------------------------------- consolidate


def consolidate(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    fqn_to_index_mapping: Mapping[str, int] | None = None,
    *,
    sync_files: bool = True,
    thread_count: int = 1,
) -> None:
    """Turn a distributed save (``shard-*`` files) into full-tensor files plus the index.

    Reads the input as :class:`HuggingFaceReader` does (the sidecar when current, else
    every safetensors file's ``DCP_SHARDING_INFO``). Chunks that overlap or leave holes raise
    :class:`LayoutMismatchError`; nothing is ever filled in. Each output header is written
    first, then each tensor assembled from the shards' byte ranges, one tensor in memory at a
    time. The output gets its own sidecar, written last.
    """
    source, target = Path(input_dir), Path(output_dir)
    if source.resolve() == target.resolve():
        raise ValueError(f"consolidate: output_dir must differ from input_dir {source}")
    if fqn_to_index_mapping is not None:
        _check_mapping(fqn_to_index_mapping)
    metadata = read_folder(source)
    stored = stored_items(metadata)
    tensors = {
        fqn: entry
        for fqn, entry in metadata.state_dict_metadata.items()
        if isinstance(entry, TensorStorageMetadata)
    }
    for fqn, entry in tensors.items():
        _check_coverage(source, fqn, entry)
    files: dict[str, list[str]] = {}
    for fqn in tensors:
        index = _file_index(fqn_to_index_mapping, fqn)
        files.setdefault(file_name(index, _file_count(fqn_to_index_mapping)), []).append(fqn)
    target.mkdir(parents=True, exist_ok=True)
    save_id = uuid.uuid4().hex
    jobs: list[tuple[str, list[str]]] = list(files.items())
    bytes_keys = [
        MetadataIndex(fqn)
        for fqn, entry in metadata.state_dict_metadata.items()
        if isinstance(entry, BytesStorageMetadata)
    ]
    assembler = _Assembler(source, target, save_id, tensors, stored, sync_files)
    results = _io.parallel_map(jobs, lambda: assembler, thread_count=thread_count)
    locations = {key: loc for part in results for key, loc in part.items()}
    if bytes_keys:
        locations.update(assembler.copy_bytes(bytes_keys))
    output = Metadata(
        state_dict_metadata={
            fqn: _whole(entry) if isinstance(entry, TensorStorageMetadata) else entry
            for fqn, entry in metadata.state_dict_metadata.items()
        },
        planner_data=metadata.planner_data,
        storage_data=locations,
    )
    commit(target, save_id, dumps(output), index_json(output), sync=sync_files)


def _whole(entry: TensorStorageMetadata) -> TensorStorageMetadata:
    chunk = ChunkStorageMetadata(torch.Size([0] * len(entry.size)), entry.size)
    return TensorStorageMetadata(entry.properties, entry.size, [chunk])


def _check_coverage(source: Path, fqn: str, entry: TensorStorageMetadata) -> None:
    boxes = [Box.of(chunk) for chunk in entry.chunks]
    pair = first_overlap(boxes)
    if pair is not None:
        raise LayoutMismatchError(
            f"{source}: tensor {fqn!r}: expected disjoint chunks, found chunks {boxes[pair[0]]} "
            f"and {boxes[pair[1]]} overlapping"
        )
    missing = holes(tuple(entry.size), boxes)
    if missing:
        raise LayoutMismatchError(
            f"{source}: tensor {fqn!r} of size {tuple(entry.size)}: expected full coverage, "
            f"found holes at {missing[:5]}"
        )


class _Assembler:
    """Writes one consolidated file per call: header first, then tensor after tensor."""

    def __init__(
        self,
        source: Path,
        target: Path,
        save_id: str,
        tensors: Mapping[str, TensorStorageMetadata],
        stored: Mapping[MetadataIndex, Stored],
        sync: bool,
    ) -> None:
        self.source, self.target, self.save_id = source, target, save_id
        self.tensors, self.stored, self.sync = tensors, stored, sync

    def __call__(self, job: tuple[str, list[str]]) -> dict[MetadataIndex, ItemLocation]:
        name, fqns = job
        infos = {fqn: dtypes.by_torch(self.tensors[fqn].properties.dtype) for fqn in fqns}
        fqns = sorted(fqns, key=lambda fqn: (-infos[fqn].itemsize, fqn))
        header, _ = encode_header(
            [(fqn, infos[fqn], tuple(self.tensors[fqn].size)) for fqn in fqns],
            {FORMAT_KEY: "pt", SAVE_ID_KEY: self.save_id},
        )
        found = {}
        path = self.target / temp_name(name, self.save_id)
        with _io.DataFileWriter(path, sync=self.sync) as out:
            out.write_bytes(header)
            for fqn in fqns:
                stored = out.write_tensor(self._assemble(fqn))
                key = MetadataIndex(fqn, torch.Size([0] * len(self.tensors[fqn].size)))
                found[key] = ItemLocation(name, stored.offset, stored.length, stored.checksum)
        return found

    def _assemble(self, fqn: str) -> torch.Tensor:
        entry = self.tensors[fqn]
        full = torch.empty(entry.size, dtype=entry.properties.dtype)
        requests = []
        for chunk in entry.chunks:
            box = Box.of(chunk)
            if box.is_empty:
                continue
            key = MetadataIndex(fqn, chunk.offsets)
            stored = self.stored[key]
            dest = full[tuple(slice(o, e) for o, e in zip(box.offsets, box.ends, strict=True))]
            target = _io.Target(Box.full(box.sizes), dest)
            requests.append(
                stored.request(self.source, (target,), stored.location.checksum, repr(fqn))
            )
        _io.read_into(requests)
        return full

    def copy_bytes(self, keys: Sequence[MetadataIndex]) -> dict[MetadataIndex, ItemLocation]:
        name = BYTES_FILE.format(1)
        found = {}
        with _io.DataFileWriter(self.target / temp_name(name, self.save_id), sync=self.sync) as out:
            for key in keys:
                stored = self.stored[key]
                data = torch.empty(stored.sizes, dtype=torch.uint8)
                target = _io.Target(Box.full(stored.sizes), data)
                _io.read_into(
                    [stored.request(self.source, (target,), stored.location.checksum, key.fqn)]
                )
                written = out.write_tensor(data)
                found[key] = ItemLocation(name, written.offset, written.length, written.checksum)
        return found

    def close(self) -> None:
        pass
