"""dcp_impl: a reference implementation of PyTorch DCP's storage layer.

``dcp.save(sd, storage_writer=dcp_impl.FileSystemWriter(path))`` and
``dcp.load(sd, storage_reader=dcp_impl.FileSystemReader(path))``; the same for
HuggingFace safetensors folders with :class:`HuggingFaceWriter` /
:class:`HuggingFaceReader`, and :func:`consolidate` for distributed HF saves.
:mod:`dcp_impl.store` (where files live) and :mod:`dcp_impl.transfer` (the read pipeline) are
the public seams both backends are built on (docs/architecture.md).
"""

import importlib
from types import ModuleType

from dcp_impl import dtypes, errors, layout, metadata, safe_load, store, transfer
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
    "transfer",
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


def __getattr__(name: str) -> ModuleType:
    # ``dcp_impl.io`` (renamed ``transfer``) is imported, and warns, only when asked for.
    if name == "io":
        return importlib.import_module("dcp_impl.io")
    raise AttributeError(f"module 'dcp_impl' has no attribute {name!r}")
