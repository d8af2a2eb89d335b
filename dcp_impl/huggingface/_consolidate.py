"""consolidate(): a distributed save's ``shard-*`` files -> full-tensor files plus the index
(``model.safetensors`` and no index where the output is one file).

Chunks are checked for overlaps and holes before anything is written; each output file is
assembled by :class:`_Assembler` (header first, then tensor after tensor read from the
shards' byte ranges, one tensor in memory at a time) and committed with its own sidecar.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorStorageMetadata,
)

from dcp_impl import dtypes, transfer
from dcp_impl._pool import parallel_map
from dcp_impl.errors import LayoutMismatchError
from dcp_impl.huggingface._commit import commit
from dcp_impl.huggingface._folder import (
    BYTES_FILE,
    Stored,
    index_json,
    read_folder,
    stored_items,
    temp_name,
    whole_file_name,
)
from dcp_impl.huggingface._plan import check_mapping, file_count, file_index
from dcp_impl.huggingface._safetensors import FORMAT_KEY, SAVE_ID_KEY, encode_header
from dcp_impl.huggingface._write import located, widest_first
from dcp_impl.layout import Box, first_overlap, holes
from dcp_impl.metadata import ItemLocation, dumps
from dcp_impl.store import Store, open_store, save_stamp

__all__ = ["consolidate"]


def consolidate(
    input_dir: str | os.PathLike[str] | Store,
    output_dir: str | os.PathLike[str] | Store,
    fqn_to_index_mapping: Mapping[str, int] | None = None,
    *,
    sync_files: bool = True,
    thread_count: int = 1,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Turn a distributed save (``shard-*`` files) into full-tensor files plus the index
    (one file: ``model.safetensors``, no index, as transformers' ``save_pretrained`` writes).

    Reads the input as :class:`~dcp_impl.huggingface.HuggingFaceReader` does (the sidecar
    when current, else every safetensors file's ``DCP_SHARDING_INFO``). Chunks that overlap
    or leave holes raise :class:`LayoutMismatchError`; nothing is ever filled in. Each output
    header is written first, then each tensor assembled from the shards' byte ranges, one
    tensor in memory at a time. The output gets its own sidecar, written last.

    Args:
        input_dir: the distributed save: a folder, an fsspec URL or a
            :class:`~dcp_impl.store.Store`.
        output_dir: where the full-tensor files go (the same kinds; not ``input_dir``).
        fqn_to_index_mapping: tensor name -> file number, as for ``HuggingFaceWriter``.
        sync_files: fsync the output files and the commit.
        thread_count: output files written in parallel.
        storage_options: passed to fsspec for URLs (credentials, endpoint).
    """
    source = open_store(input_dir, storage_options)
    target = open_store(output_dir, storage_options)
    if source.same_place(target):
        raise ValueError(f"consolidate: output_dir must differ from input_dir {source.url}")
    if fqn_to_index_mapping is not None:
        check_mapping(fqn_to_index_mapping)
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
        index = file_index(fqn_to_index_mapping, fqn)
        name = whole_file_name(index, file_count(fqn_to_index_mapping))
        files.setdefault(name, []).append(fqn)
    target.make_dirs()
    save_id = save_stamp()
    jobs: list[tuple[str, list[str]]] = list(files.items())
    bytes_keys = [
        MetadataIndex(fqn)
        for fqn, entry in metadata.state_dict_metadata.items()
        if isinstance(entry, BytesStorageMetadata)
    ]

    def assembler() -> _Assembler:
        return _Assembler(source, target, save_id, tensors, stored, sync_files)

    results = parallel_map(jobs, assembler, thread_count=thread_count)
    locations = {key: loc for part in results for key, loc in part.items()}
    if bytes_keys:
        locations.update(assembler().copy_bytes(bytes_keys))
    output = Metadata(
        state_dict_metadata={
            fqn: _whole(entry) if isinstance(entry, TensorStorageMetadata) else entry
            for fqn, entry in metadata.state_dict_metadata.items()
        },
        planner_data=metadata.planner_data,
        storage_data=locations,
    )
    written = {loc.path for loc in locations.values()}
    commit(target, save_id, written, dumps(output), index_json(output), sync=sync_files)


def _whole(entry: TensorStorageMetadata) -> TensorStorageMetadata:
    chunk = ChunkStorageMetadata(torch.Size([0] * len(entry.size)), entry.size)
    return TensorStorageMetadata(entry.properties, entry.size, [chunk])


def _check_coverage(source: Store, fqn: str, entry: TensorStorageMetadata) -> None:
    boxes = [Box.of(chunk) for chunk in entry.chunks]
    pair = first_overlap(boxes)
    if pair is not None:
        raise LayoutMismatchError(
            f"{source.url}: tensor {fqn!r}: expected disjoint chunks, found chunks "
            f"{boxes[pair[0]]} and {boxes[pair[1]]} overlapping"
        )
    missing = holes(tuple(entry.size), boxes)
    if missing:
        raise LayoutMismatchError(
            f"{source.url}: tensor {fqn!r} of size {tuple(entry.size)}: expected full coverage, "
            f"found holes at {missing[:5]}"
        )


class _Assembler:
    """Writes one consolidated file per call: header first, then tensor after tensor (one
    worker per I/O thread)."""

    def __init__(
        self,
        source: Store,
        target: Store,
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
        fqns = sorted(fqns, key=lambda fqn: widest_first(infos[fqn], fqn))
        header, _ = encode_header(
            [(fqn, infos[fqn], tuple(self.tensors[fqn].size)) for fqn in fqns],
            {FORMAT_KEY: "pt", SAVE_ID_KEY: self.save_id},
        )
        found = {}
        with self.target.create(temp_name(name, self.save_id), sync=self.sync) as out:
            out.write_bytes(header)
            for fqn in fqns:
                stored = out.write_tensor(self._assemble(fqn))
                key = MetadataIndex(fqn, torch.Size([0] * len(self.tensors[fqn].size)))
                found[key] = located(name, stored)
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
            target = transfer.Target(Box.full(box.sizes), dest)
            requests.append(stored.item(self.source, repr(fqn)).request((target,)))
        self.source.read(requests, thread_count=1, verify=True)
        return full

    def copy_bytes(self, keys: Sequence[MetadataIndex]) -> dict[MetadataIndex, ItemLocation]:
        name = BYTES_FILE.format(1)
        found = {}
        with self.target.create(temp_name(name, self.save_id), sync=self.sync) as out:
            for key in keys:
                stored = self.stored[key]
                data = torch.empty(stored.sizes, dtype=torch.uint8)
                target = transfer.Target(Box.full(stored.sizes), data)
                request = stored.item(self.source, key.fqn).request((target,))
                self.source.read([request], thread_count=1, verify=True)
                written = out.write_tensor(data)
                found[key] = located(name, written)
        return found

    def close(self) -> None:
        pass
