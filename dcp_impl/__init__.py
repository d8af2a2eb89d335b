"""dcp_impl: a reference implementation of PyTorch DCP's storage layer.

``dcp.save(sd, storage_writer=dcp_impl.FileSystemWriter(path))`` and
``dcp.load(sd, storage_reader=dcp_impl.FileSystemReader(path))``; the same for
HuggingFace safetensors folders with :class:`HuggingFaceWriter` /
:class:`HuggingFaceReader`, and :func:`consolidate` for distributed HF saves.
:mod:`dcp_impl.store` (where files live) and :mod:`dcp_impl.io` (the read pipeline) are the
public seams both backends are built on (docs/architecture.md).
"""

from dcp_impl import dtypes, errors, io, layout, metadata, safe_load, store
from dcp_impl.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidMetadataError,
    LayoutMismatchError,
    OverwriteRefusedError,
    StorageFaultError,
    UnknownDtypeError,
    UnsafeCheckpointError,
    UnsafeFileError,
    UnsupportedError,
    WriteFailedError,
)
from dcp_impl.filesystem import FileSystemReader, FileSystemWriter
from dcp_impl.huggingface import HuggingFaceReader, HuggingFaceWriter, consolidate

__all__ = [
    "FileSystemReader",
    "FileSystemWriter",
    "HuggingFaceReader",
    "HuggingFaceWriter",
    "consolidate",
    "dtypes",
    "io",
    "store",
    "errors",
    "layout",
    "metadata",
    "safe_load",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "InvalidMetadataError",
    "LayoutMismatchError",
    "OverwriteRefusedError",
    "StorageFaultError",
    "UnknownDtypeError",
    "UnsafeCheckpointError",
    "UnsafeFileError",
    "UnsupportedError",
    "WriteFailedError",
]
