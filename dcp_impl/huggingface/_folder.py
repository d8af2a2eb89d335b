"""HuggingFace folder rules: file names, reading a folder into DCP Metadata, committing a save.

docs/huggingface.md gives the rules. :func:`read_folder` reads the sidecar when it is
current, else the index, else every safetensors file (headers through :mod:`._safetensors`);
:func:`stored_items` maps the result to what a read needs;
:mod:`._commit` moves a save's files into place through the journal (:mod:`._journal`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)

from dcp_impl import transfer
from dcp_impl.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidMetadataError,
    LayoutMismatchError,
)
from dcp_impl.huggingface import _safetensors
from dcp_impl.huggingface._journal import JOURNAL_NAME, committed, read_journal
from dcp_impl.huggingface._safetensors import (
    SAVE_ID_KEY,
    Header,
    TensorEntry,
    saved_offsets,
    strict_json,
)
from dcp_impl.metadata import MAX_METADATA_BYTES, ItemLocation, loads
from dcp_impl.store import Store

__all__ = [
    "SUFFIX",
    "SINGLE_FILE",
    "INDEX_NAME",
    "SIDECAR_NAME",
    "BYTES_FILE",
    "file_name",
    "whole_file_name",
    "temp_name",
    "is_folder",
    "read_folder",
    "read_header",
    "current_sidecar",
    "Stored",
    "stored_items",
    "index_json",
    "held_files",
    "is_ours",
]

logger = logging.getLogger("dcp_impl.huggingface")

SUFFIX = ".safetensors"
# transformers' names: save_pretrained writes SINGLE_FILE for one file, and from_pretrained
# reads it in preference to the index (modeling_utils._get_resolved_checkpoint_files).
SINGLE_FILE = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
SIDECAR_NAME = "dcp_metadata.json"
BYTES_FILE = "dcp-bytes-{:05d}.bin"
# Files a newer save replaces once it has committed: the names this backend and transformers'
# save_pretrained write, so that from_pretrained never finds an earlier save's weights.
_OURS = re.compile(
    r"(shard-\d{5}-)?model-\d{5}-of-\d{5}\.safetensors|model\.safetensors|dcp-bytes-\d{5}\.bin"
)
_LEN_BYTES = 8  # a safetensors file starts with its header's length, u64 little-endian


def file_name(index: int, count: int, shard: int | None = None) -> str:
    """``model-0000i-of-0000N.safetensors``, ``shard-0000s-`` in front if sharded (as torch)."""
    base = f"model-{index:05d}-of-{count:05d}{SUFFIX}"
    return base if shard is None else f"shard-{shard:05d}-{base}"


def whole_file_name(index: int, count: int) -> str:
    """A file of whole tensors: ``model.safetensors`` when it is the only one, as
    transformers' ``save_pretrained`` names it; else ``model-0000i-of-0000N.safetensors``."""
    return SINGLE_FILE if count == 1 else file_name(index, count)


def temp_name(name: str, save_id: str) -> str:
    """Where a save writes ``name`` before its commit (:mod:`._commit`) moves it into place."""
    return f".{name}.{save_id}.tmp"


# --------------------------------------------------------------------------- reading


def read_folder(folder: Store) -> Metadata:
    """The checkpoint Metadata of a HuggingFace folder, with ItemLocation storage_data.

    The sidecar when it is current (see :func:`current_sidecar`); otherwise, in transformers'
    order, ``model.safetensors``, else the files the index's ``weight_map`` names (only the
    tensors it assigns to each), else every ``*.safetensors`` file, with chunk offsets from
    ``DCP_SHARDING_INFO`` where present.
    """
    if not folder.is_dir():
        raise CheckpointNotFoundError(f"{folder.url}: expected a checkpoint folder, found none")
    journal = read_journal(folder)
    if journal is not None:
        return committed(folder, journal, SIDECAR_NAME)
    metadata = current_sidecar(folder)
    if metadata is not None:
        return metadata
    files = _listed_files(folder)
    if not files:
        raise CheckpointNotFoundError(
            f"{folder.url}: expected {SIDECAR_NAME}, {INDEX_NAME} or *{SUFFIX} files, found none"
        )
    return _metadata_from_headers(folder, files)


def is_folder(folder: Store) -> bool:
    """Whether ``folder`` looks like a HuggingFace folder: sidecar, index, safetensors files or
    a commit journal."""
    names = folder.list_files()
    return any(n in (SIDECAR_NAME, INDEX_NAME, JOURNAL_NAME) or n.endswith(SUFFIX) for n in names)


def read_header(folder: Store, name: str) -> Header:
    """Read and strictly parse the header of the safetensors file ``name`` of ``folder``
    (``FileNotFoundError`` when the file is missing; see ``_safetensors.read_header``)."""
    return _safetensors.read_header(
        folder.path(name),
        lambda: folder.size(name),
        lambda offset, length: folder.read_range(name, offset, length),
    )


def _corrupt(path: str, expected: str, found: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{path}: expected {expected}, found {found}")


def current_sidecar(folder: Store) -> Metadata | None:
    """The sidecar's Metadata, or None when there is none or other writers replaced its files.

    Current means: every safetensors file it names exists, all carry one ``DCP_IMPL_SAVE_ID``,
    each header places each of the file's items where the sidecar says, and what transformers
    would load is one of them: ``model.safetensors`` if present, else the files the index (if
    any) names. A sidecar that is not valid JSON metadata is an error, never skipped.
    """
    path = folder.path(SIDECAR_NAME)
    try:
        text = folder.read_small(SIDECAR_NAME, MAX_METADATA_BYTES)
    except FileNotFoundError:
        return None
    metadata = loads(text)
    storage = metadata.storage_data
    if not isinstance(storage, dict):
        raise InvalidMetadataError(f"{path}: expected storage_data, found none")
    by_file: dict[str, list[tuple[MetadataIndex, ItemLocation]]] = {}
    for key, location in storage.items():
        if location.path.endswith(SUFFIX):
            by_file.setdefault(location.path, []).append((key, location))
    save_ids = set()
    for name, items in by_file.items():
        try:
            header = read_header(folder, name)
        except FileNotFoundError:
            return _stale(path, f"{name} is missing")
        save_ids.add(header.metadata.get(SAVE_ID_KEY))
        for key, location in items:
            entry = header.entries.get(key.fqn)
            if entry is None or (header.data_start + entry.begin, entry.length) != (
                location.offset,
                location.length,
            ):
                return _stale(path, f"{name} does not hold {key.fqn!r} where the sidecar says")
    if len(save_ids) > 1 or None in save_ids:
        return _stale(path, "its files come from different saves")
    if folder.exists(SINGLE_FILE):
        if SINGLE_FILE not in by_file:
            return _stale(path, f"{SINGLE_FILE}, which transformers reads first, is not its own")
        return metadata
    weight_map = _weight_map(folder)
    if weight_map is not None and not set(weight_map.values()) <= set(by_file):
        return _stale(path, f"{INDEX_NAME} names files the sidecar does not")
    return metadata


def _stale(path: str, why: str) -> Metadata | None:
    logger.warning("ignoring %s written by an earlier save: %s", path, why)
    return None


def _weight_map(folder: Store) -> dict[str, str] | None:
    path = folder.path(INDEX_NAME)
    try:
        text = folder.read_small(INDEX_NAME, MAX_METADATA_BYTES)
    except FileNotFoundError:
        return None
    try:
        doc = strict_json(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CorruptCheckpointError(
            f"{path}: expected JSON, found unparseable bytes ({err})"
        ) from err
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    # Plain file names only: an index must not make us open files outside the folder.
    if not isinstance(weight_map, dict) or not all(
        isinstance(v, str) and v.endswith(SUFFIX) and PurePosixPath(v).name == v and "\\" not in v
        for v in weight_map.values()
    ):
        raise CorruptCheckpointError(
            f"{path}: expected a weight_map of tensor name -> *{SUFFIX} file, "
            f"found {weight_map!r:.200}"
        )
    return weight_map


def _listed_files(folder: Store) -> dict[str, set[str] | None]:
    """File name -> the tensors to take from it (None: all of them), in transformers' order."""
    if folder.exists(SINGLE_FILE):
        return {SINGLE_FILE: None}
    weight_map = _weight_map(folder)
    if weight_map is not None:
        files: dict[str, set[str] | None] = {}
        for fqn, name in weight_map.items():
            wanted = files.setdefault(name, set())
            assert wanted is not None
            wanted.add(fqn)
        return files
    names = sorted(name for name in folder.list_files() if name.endswith(SUFFIX))
    return dict.fromkeys(names)


def _metadata_from_headers(folder: Store, files: Mapping[str, set[str] | None]) -> Metadata:
    tensors: dict[str, TensorStorageMetadata] = {}
    storage: dict[MetadataIndex, ItemLocation] = {}
    save_ids: dict[str, str] = {}
    for name, wanted in files.items():
        try:
            header = read_header(folder, name)
        except FileNotFoundError as err:
            raise CorruptCheckpointError(
                f"{folder.path(name)}: listed in {INDEX_NAME}, missing"
            ) from err
        if SAVE_ID_KEY in header.metadata:
            save_ids.setdefault(header.metadata[SAVE_ID_KEY], name)
        offsets = saved_offsets(header)
        for entry in header.entries.values():
            if wanted is not None and entry.name not in wanted:
                continue
            at = offsets[entry.name] if offsets is not None else (0,) * len(entry.shape)
            _add_chunk(tensors, entry, at, name)
            key = MetadataIndex(entry.name, at)
            if key in storage:
                raise LayoutMismatchError(
                    f"{folder.url}: tensor {entry.name!r} chunk at offsets {at}: expected it in "
                    f"one file, found it in {storage[key].path} and {name}"
                )
            storage[key] = ItemLocation(name, header.data_start + entry.begin, entry.length)
        if wanted is not None and not wanted <= header.entries.keys():
            missing = sorted(wanted - header.entries.keys())[:5]
            raise CorruptCheckpointError(
                f"{folder.path(name)}: {INDEX_NAME} places {missing} here, absent"
            )
    if len(save_ids) > 1:
        first, second = list(save_ids.values())[:2]
        raise CorruptCheckpointError(
            f"{folder.url}: expected the files of one save, found {first} and {second} from "
            "different saves and no current sidecar (an interrupted save?)"
        )
    return Metadata(state_dict_metadata=dict(tensors), storage_data=storage)


def _add_chunk(
    tensors: dict[str, TensorStorageMetadata], entry: TensorEntry, at: tuple[int, ...], name: str
) -> None:
    chunk = ChunkStorageMetadata(torch.Size(at), torch.Size(entry.shape))
    ends = [o + s for o, s in zip(at, entry.shape, strict=True)]
    known = tensors.get(entry.name)
    if known is None:
        properties = TensorProperties(dtype=entry.dtype.torch_dtype)
        tensors[entry.name] = TensorStorageMetadata(properties, torch.Size(ends), [chunk])
        return
    if known.properties.dtype != entry.dtype.torch_dtype or len(known.size) != len(ends):
        raise LayoutMismatchError(
            f"{name}: tensor {entry.name!r}: expected chunks of {known.properties.dtype} with "
            f"{len(known.size)} dims, found {entry.dtype.torch_dtype} with {len(ends)}"
        )
    known.chunks.append(chunk)
    # Without a sidecar, the extent of the chunks is all that is known of the size.
    known.size = torch.Size(max(a, b) for a, b in zip(known.size, ends, strict=True))


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored item as a read needs it: where, and the chunk it holds."""

    location: ItemLocation
    sizes: tuple[int, ...]
    dtype: torch.dtype

    def item(self, folder: Store, label: str) -> transfer.StoredItem:
        """This item in ``folder``, as a read needs it."""
        loc = self.location
        path = folder.path(loc.path)
        return transfer.StoredItem(
            path, loc.offset, loc.length, self.sizes, self.dtype, loc.checksum, label
        )


def stored_items(metadata: Metadata) -> dict[MetadataIndex, Stored]:
    """Every item of ``metadata`` that has an ItemLocation, by its storage key."""
    storage = metadata.storage_data
    if not isinstance(storage, dict):
        raise InvalidMetadataError(
            f"storage_data: expected a dict of ItemLocation, found {type(storage).__name__}"
        )
    found: dict[MetadataIndex, Stored] = {}
    for fqn, entry in metadata.state_dict_metadata.items():
        if isinstance(entry, BytesStorageMetadata):
            loc = storage.get(MetadataIndex(fqn))
            if isinstance(loc, ItemLocation):
                found[MetadataIndex(fqn)] = Stored(loc, (loc.length,), torch.uint8)
            continue
        for chunk in entry.chunks:
            key = MetadataIndex(fqn, chunk.offsets)
            loc = storage.get(key)
            # A chunk without a location fails only if a load asks for it.
            if isinstance(loc, ItemLocation):
                found[key] = Stored(loc, tuple(chunk.sizes), entry.properties.dtype)
    return found


# --------------------------------------------------------------------------- committing


def index_json(metadata: Metadata) -> str | None:
    """``model.safetensors.index.json`` as transformers' ``save_pretrained`` writes it, or None
    where every tensor is in ``model.safetensors`` (which needs no index)."""
    assert isinstance(metadata.storage_data, dict)
    weight_map = {}
    total_size = total_parameters = 0
    for key, loc in metadata.storage_data.items():
        entry = metadata.state_dict_metadata[key.fqn]
        if isinstance(entry, TensorStorageMetadata):  # whole tensors here: one item per name
            weight_map[key.fqn] = loc.path
            total_size += loc.length
            total_parameters += entry.size.numel()
    if set(weight_map.values()) == {SINGLE_FILE}:
        return None
    doc = {
        "metadata": {"total_parameters": total_parameters, "total_size": total_size},
        "weight_map": dict(sorted(weight_map.items())),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def is_ours(name: str) -> bool:
    """Whether a save of this backend writes (and a newer one replaces) the file ``name``."""
    return name in (SIDECAR_NAME, INDEX_NAME) or _OURS.fullmatch(name) is not None


def held_files(folder: Store) -> list[str]:
    """The files of ``folder`` a save would replace: a sidecar, an index, and weights named as
    this backend or ``save_pretrained`` names them."""
    names = folder.list_files() if folder.is_dir() else []
    return sorted(n for n in names if is_ours(n))
