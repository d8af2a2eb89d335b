"""The one exception tree of dcp_impl.

Every error raised on purpose is a :class:`CheckpointError`. Each leaf also
subclasses the nearest builtin, so ``except FileNotFoundError`` keeps working
for callers that do not know about this package. Messages name the subject,
what was expected and what was found.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConcurrentSaveError",
    "CorruptCheckpointError",
    "InvalidMetadataError",
    "InvalidOptionError",
    "LayoutMismatchError",
    "OverwriteRefusedError",
    "SharedReadError",
    "SharedReadTimeoutError",
    "StorageFaultError",
    "UnknownDtypeError",
    "UnsafeCheckpointError",
    "UnsafeFileError",
    "UnsupportedError",
    "WriteFailedError",
]


class CheckpointError(Exception):
    """Root of every error dcp_impl raises on purpose."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No committed checkpoint exists at the given location."""


class CorruptCheckpointError(CheckpointError, ValueError):
    """Stored data is truncated, missing or fails its checksum."""


class InvalidMetadataError(CheckpointError, ValueError):
    """Checkpoint metadata is malformed, unsupported, or inconsistent."""


class UnknownDtypeError(CheckpointError, ValueError):
    """A dtype name or torch dtype is not in the dtype table."""


class LayoutMismatchError(CheckpointError, ValueError):
    """The requested shape, dtype or region differs from what is stored."""


class UnsupportedError(CheckpointError, TypeError):
    """The storage format cannot represent this entry (e.g. a dtype safetensors lacks)."""


class UnsafeCheckpointError(CheckpointError, ValueError):
    """A stored non-tensor entry needs more than ``torch.load(weights_only=True)`` allows.

    Unpickling it could run code; readers refuse it unless told to trust the checkpoint
    (``trust_pickle=True``) or given the globals it needs (``safe_globals=[...]``).
    """


class WriteFailedError(CheckpointError, OSError):
    """Writing checkpoint data failed; nothing was committed."""


class OverwriteRefusedError(CheckpointError, FileExistsError):
    """A committed checkpoint exists and overwriting was not allowed."""


class ConcurrentSaveError(CheckpointError, RuntimeError):
    """Another save to the same location got in the way: it holds the commit lock, or it
    committed after this save started and removed this save's files. Nothing was committed
    by this save; the other save's checkpoint (or the earlier one) is intact."""


class UnsafeFileError(CheckpointError, OSError):
    """A checkpoint file is not what it claims to be: a link out of the checkpoint, or not
    a regular file (a FIFO, a device, a directory). Readers refuse it without reading it."""


class StorageFaultError(CheckpointError, OSError):
    """The storage refused an operation on a checkpoint file: no space left, too many open
    files, permission denied, a missing bucket. ``errno`` is the failure's; the message
    names the file and what to do about it."""


class InvalidOptionError(CheckpointError, ValueError):
    """A writer or reader was constructed with an option value it does not take; raised at
    construction, before anything is read or written."""


class SharedReadError(CheckpointError, RuntimeError):
    """A load that shares reads between the ranks of one host (``share_reads``) could not
    take an item from the rank that reads it: that rank failed or died, or the shared
    segment was removed. The message names the item, the rank and what happened to it."""


class SharedReadTimeoutError(SharedReadError, TimeoutError):
    """A rank waited longer than ``share_timeout`` seconds for an item another rank of its
    host reads from storage and publishes."""
