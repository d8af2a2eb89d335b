"""The commit journal of a HuggingFace folder: ``.dcp_commit.json``.

A folder's file names are fixed (transformers reads ``model.safetensors``, the index and the
files it names), so a save cannot replace them in one step. It writes every new file under
a temporary name first, then commits this journal, which lists the moves still to make; the
journal is the commit point. Then the files are moved into place, superseded ones removed,
and the journal removed. While a journal exists, readers take the new checkpoint through it
(each file from its temporary name while that still exists), never the files in place,
which may be a mix of two saves (docs/huggingface.md, "Commit rule").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import PurePosixPath

from torch.distributed.checkpoint.metadata import Metadata

from dcp_impl.errors import CorruptCheckpointError, InvalidMetadataError
from dcp_impl.huggingface._safetensors import strict_json
from dcp_impl.metadata import MAX_METADATA_BYTES, loads
from dcp_impl.store import Store

__all__ = ["JOURNAL_NAME", "Journal", "committed", "read_journal"]

JOURNAL_NAME = ".dcp_commit.json"
_FORMAT = "dcp_impl-hf-commit"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Journal:
    """A committed save still being moved into place."""

    save_id: str
    renames: dict[str, str]
    """Final name -> the temporary name its new file is written under."""
    remove: tuple[str, ...]
    """Files of earlier saves the new checkpoint supersedes."""

    def __post_init__(self) -> None:
        for name in (*self.renames, *self.renames.values(), *self.remove):
            if not _plain(name):
                raise CorruptCheckpointError(
                    f"{JOURNAL_NAME}: expected plain file names, found {name!r:.100}"
                )

    def encode(self) -> bytes:
        """The journal as stored."""
        doc = {
            "format": _FORMAT,
            "version": _VERSION,
            "save_id": self.save_id,
            "renames": self.renames,
            "remove": list(self.remove),
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()


def _plain(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and PurePosixPath(name).name == name
        and "\\" not in name
    )


def read_journal(folder: Store) -> Journal | None:
    """The folder's journal, or None when no commit is in progress; an unreadable journal
    raises (the folder's files may be a mix of two saves)."""
    path = folder.path(JOURNAL_NAME)
    try:
        raw = folder.read_small(JOURNAL_NAME, MAX_METADATA_BYTES)
    except FileNotFoundError:
        return None
    try:
        doc = strict_json(raw)
        if doc["format"] != _FORMAT or doc["version"] != _VERSION:
            raise ValueError(f"format {doc['format']!r} version {doc['version']!r}")
        renames, remove = doc["renames"], doc["remove"]
        if not isinstance(renames, dict) or not isinstance(remove, list):
            raise ValueError("renames or remove of the wrong type")
        return Journal(str(doc["save_id"]), dict(renames), tuple(remove))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as err:
        raise CorruptCheckpointError(
            f"{path}: expected a {_FORMAT} v{_VERSION} journal, found unreadable content "
            f"({err}); the folder may hold a mix of two saves"
        ) from err


def committed(folder: Store, journal: Journal, sidecar: str) -> Metadata:
    """The checkpoint ``journal`` committed (``sidecar``: the sidecar's final name), each file
    read from its temporary name while it has one (a commit in progress, or killed after its
    commit point)."""
    temp = journal.renames.get(sidecar)
    try:
        text = folder.read_small(temp, MAX_METADATA_BYTES) if temp else None
    except FileNotFoundError:
        text = None  # moved into place since
    if text is None:
        text = folder.read_small(sidecar, MAX_METADATA_BYTES)
    metadata = loads(text)
    if not isinstance(metadata.storage_data, dict):
        raise InvalidMetadataError(f"{folder.path(sidecar)}: expected storage_data")
    present = set(folder.list_files())
    moved = {
        final: temp
        for final, temp in journal.renames.items()
        if temp in present and final != sidecar
    }
    metadata.storage_data = {
        key: dataclasses.replace(loc, path=moved[loc.path]) if loc.path in moved else loc
        for key, loc in metadata.storage_data.items()
    }
    return metadata
