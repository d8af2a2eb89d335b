"""``python -m dcp_impl inspect|verify PATH``: look into a checkpoint folder, or check it.

``PATH`` is a local folder or an fsspec URL (``s3://bucket/prefix``); fsspec takes
credentials and endpoints from its environment variables (``AWS_ENDPOINT_URL``, ...).

Folder kinds: a dcp_impl filesystem checkpoint (``.metadata.json``) and a HuggingFace
safetensors folder (written by dcp_impl, by torch's HF backend or by ``save_file``).

``inspect`` prints every entry (name, dtype, shape, chunks, bytes) and totals. ``verify``
checks the metadata (chunk coverage, ``metadata.validate``) and reads every stored item
through the backend's reader with verification on, reporting each problem it finds, and a
warning for each non-tensor entry a default reader refuses because unpickling it could run
code (``UnsafeCheckpointError``: it loads only with ``trust_pickle`` or ``safe_globals``;
docs/security.md). Nothing is ever unpickled beyond torch's weights-only rules.

Exit status: 0 when all is well, 1 when ``verify`` found problems (or, with
``--untrusted``, an entry that needs the opt-in), 2 when ``PATH`` holds no checkpoint, its
metadata cannot be read, or reading it fails otherwise (a ``CheckpointError`` or ``OSError``:
a link out of the checkpoint, a special file, no permission); the problem is reported in one
line, never as a traceback. ``verify`` compares each item's declared bytes with its file's
size before allocating anything for it. A new kind of checkpoint folder is added in
:func:`open_checkpoint` alone.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, ReadItem
from torch.distributed.checkpoint.storage import StorageReader

from dcp_impl import dtypes
from dcp_impl import metadata as metadata_format
from dcp_impl.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
)
from dcp_impl.filesystem import METADATA_FILE, FileSystemReader
from dcp_impl.huggingface import HuggingFaceReader, is_huggingface_folder
from dcp_impl.store import Store, is_checkpoint_id, open_store

__all__ = ["Checkpoint", "main", "open_checkpoint"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A recognised checkpoint folder: its kind, a verifying reader, and its metadata."""

    kind: str
    reader: StorageReader
    metadata: Metadata


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Recognise the kind of checkpoint in ``path`` (a folder or fsspec URL) and read its
    metadata.

    The one place that knows folder kinds: each kind gives a reader that verifies what it
    reads. Raises CheckpointNotFoundError when no kind matches.
    """
    if not is_checkpoint_id(path):
        raise CheckpointNotFoundError(
            f"{path}: expected a folder or a URL of a protocol fsspec knows, found neither"
        )
    if open_store(path).exists(METADATA_FILE):
        reader = FileSystemReader(path, verify=True, thread_count=1)
        return Checkpoint("dcp_impl filesystem", reader, reader.read_metadata())
    if is_huggingface_folder(path):
        hf_reader = HuggingFaceReader(path, verify=True)
        return Checkpoint("huggingface safetensors", hf_reader, hf_reader.read_metadata())
    raise CheckpointNotFoundError(
        f"{path}: expected a checkpoint folder (holding {METADATA_FILE}, or HuggingFace "
        "safetensors files), found none"
    )


def _describe(name: str, entry: object) -> tuple[str, str, str, int, int]:
    if isinstance(entry, TensorStorageMetadata):
        itemsize = dtypes.by_torch(entry.properties.dtype).itemsize
        # Python integers: hostile sizes must not overflow int64 on the way to a report.
        nbytes = sum(math.prod(c.sizes) for c in entry.chunks) * itemsize
        dtype = str(entry.properties.dtype).removeprefix("torch.")
        return name, dtype, str(tuple(entry.size)), len(entry.chunks), nbytes
    return name, "bytes", "-", 1, 0


def _inspect(checkpoint: Checkpoint) -> int:
    md = checkpoint.metadata
    rows = [_describe(name, entry) for name, entry in md.state_dict_metadata.items()]
    locations = md.storage_data if isinstance(md.storage_data, dict) else {}
    sizes = {index.fqn: loc.length for index, loc in locations.items() if index.offset is None}
    rows = [r if r[1] != "bytes" else (*r[:4], sizes.get(r[0], 0)) for r in rows]
    header = ("NAME", "DTYPE", "SHAPE", "CHUNKS", "BYTES")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    print(f"{checkpoint.kind} checkpoint")
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, str(row[4])]))
    tensors = sum(1 for r in rows if r[1] != "bytes")
    print(
        f"total: {tensors} tensors, {len(rows) - tensors} byte entries, "
        f"{sum(r[3] for r in rows)} stored items, {sum(r[4] for r in rows)} bytes"
    )
    return 0


class _Sink:
    """A load planner that gives each item a fresh buffer and keeps nothing."""

    def __init__(self, metadata: Metadata) -> None:
        self._metadata = metadata

    def resolve_tensor(self, item: ReadItem) -> torch.Tensor:
        entry = self._metadata.state_dict_metadata[item.storage_index.fqn]
        assert isinstance(entry, TensorStorageMetadata)  # _read_items only makes these
        try:
            return torch.empty(item.lengths, dtype=entry.properties.dtype)
        except (RuntimeError, MemoryError) as err:  # sizes only a hostile metadata declares
            raise CorruptCheckpointError(
                f"{item.storage_index.fqn!r}: expected a chunk that fits in memory, found "
                f"sizes {tuple(item.lengths)} ({err})"
            ) from err

    def commit_tensor(self, item: ReadItem, tensor: torch.Tensor) -> None:
        pass

    def load_bytes(self, item: ReadItem, value: Any) -> None:
        pass


def _read_items(md: Metadata) -> list[ReadItem]:
    """One ReadItem per stored item, covering it whole."""
    items = []
    for name, entry in md.state_dict_metadata.items():
        if isinstance(entry, BytesStorageMetadata):
            index, empty = MetadataIndex(name), torch.Size()
            items.append(ReadItem(LoadItemType.BYTE_IO, index, empty, index, empty, empty))
            continue
        assert isinstance(entry, TensorStorageMetadata)
        for i, chunk in enumerate(entry.chunks):
            zeros = torch.Size([0] * len(chunk.sizes))
            index = MetadataIndex(name, chunk.offsets, i)
            items.append(ReadItem(LoadItemType.TENSOR, index, zeros, index, zeros, chunk.sizes))
    return items


def _beyond_file_ends(checkpoint: Checkpoint) -> dict[MetadataIndex, str]:
    """The stored items whose bytes the metadata places past the end of their file, each
    with the problem to report: checked before any buffer is allocated for them, so a
    hostile size costs nothing."""
    locations = checkpoint.metadata.storage_data
    if not isinstance(locations, dict):
        return {}
    store = getattr(checkpoint.reader, "store", None)  # both readers of open_checkpoint have one
    if not isinstance(store, Store):
        return {}
    sizes: dict[str, int | None] = {}
    found: dict[MetadataIndex, str] = {}
    for index, location in locations.items():
        if not isinstance(location, metadata_format.ItemLocation):
            continue
        if location.path not in sizes:
            try:
                sizes[location.path] = store.size(location.path)
            except (CheckpointError, OSError):
                sizes[location.path] = None  # the read reports it, naming the item
        size = sizes[location.path]
        end = location.offset + location.length
        if size is not None and end > size:
            found[index] = (
                f"{store.path(location.path)}: item {index.fqn!r} is truncated: expected bytes "
                f"up to {end}, found end of file at {size}"
            )
    return found


def _verify(checkpoint: Checkpoint, *, untrusted: bool = False) -> int:
    md = checkpoint.metadata
    problems: list[str] = []
    unsafe: list[str] = []
    try:
        metadata_format.validate(md)
    except CheckpointError as err:
        problems.append(f"metadata: {err}")
    reader = checkpoint.reader
    reader.set_up_storage_reader(md, True)
    items = _read_items(md)
    beyond = _beyond_file_ends(checkpoint)
    for item in items:  # one at a time: memory stays bounded, every problem is listed
        if item.storage_index in beyond:  # never allocated: the file cannot hold it
            problems.append(beyond[item.storage_index])
            continue
        try:
            reader.read_data(LoadPlan([item]), _Sink(md)).wait()  # type: ignore[arg-type]
        except UnsafeCheckpointError as err:
            unsafe.append(str(err))
        except (CheckpointError, OSError) as err:
            problems.append(str(err))
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    for warning in unsafe:
        print(f"WARNING: {warning}", file=sys.stderr)
    failed = bool(problems) or (untrusted and bool(unsafe))
    summary = f"{checkpoint.kind} checkpoint, {len(items)} items, {len(problems)} problems"
    if unsafe:
        summary += f", {len(unsafe)} entries need trust_pickle or safe_globals"
    print(f"{'FAILED' if failed else 'OK'}: {summary}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m dcp_impl", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["inspect", "verify"])
    parser.add_argument("path", help="checkpoint folder or fsspec URL")
    parser.add_argument(
        "--untrusted",
        action="store_true",
        help="verify: fail (exit 1) if any non-tensor entry could run code when unpickled",
    )
    args = parser.parse_args(argv)
    try:
        checkpoint = open_checkpoint(args.path)
        if args.command == "inspect":
            return _inspect(checkpoint)
        return _verify(checkpoint, untrusted=args.untrusted)
    except (CheckpointError, OSError) as err:  # the input's problem: a report, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
