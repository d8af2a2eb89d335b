"""dcp_impl: a reference implementation of PyTorch DCP's storage layer."""

from dcp_impl import dtypes, errors
from dcp_impl.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidMetadataError,
    LayoutMismatchError,
    OverwriteRefusedError,
    UnknownDtypeError,
    UnsupportedError,
    WriteFailedError,
)

__all__ = [
    "dtypes",
    "errors",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "InvalidMetadataError",
    "LayoutMismatchError",
    "OverwriteRefusedError",
    "UnknownDtypeError",
    "UnsupportedError",
    "WriteFailedError",
]
