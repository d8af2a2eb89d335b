"""Committing a HuggingFace save: temporary files, then the journal, then the moves.

:func:`commit` runs under the location's commit lock (:func:`dcp_impl.store.commit_lock`):

1. every data file this save wrote must still be there under its temporary name (a newer
   save removes the files of saves that started before it: such a save fails here with
   :class:`~dcp_impl.errors.ConcurrentSaveError`, committing nothing);
2. the index and the sidecar are written under temporary names too, so that every byte the
   new checkpoint needs is on disk before the commit point (a full disk fails here, with the
   previous checkpoint untouched);
3. the journal is committed (one atomic write): the commit point (:mod:`._journal`);
4. superseded files are removed, the new ones moved into place (the sidecar last) and the
   journal removed; temporary files of saves that started earlier are removed.
"""

from __future__ import annotations

import contextlib
import re

from dcp_impl.errors import ConcurrentSaveError
from dcp_impl.huggingface._folder import (
    INDEX_NAME,
    SIDECAR_NAME,
    is_ours,
    temp_name,
)
from dcp_impl.huggingface._journal import JOURNAL_NAME, Journal
from dcp_impl.store import HeldLock, Store, commit_lock, older_save, stamp_of

__all__ = ["commit"]

_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<save>[0-9a-f]{32})\.tmp")


def commit(
    directory: Store,
    save_id: str,
    files: set[str],
    sidecar: str,
    index: str | None,
    *,
    sync: bool,
) -> None:
    """Commit the save ``save_id`` whose data files (final names) are ``files``."""
    with commit_lock(directory) as lock:
        # One listing serves the whole step: under the lock nothing else commits or removes.
        listed = directory.list_files()
        renames = {name: temp_name(name, save_id) for name in sorted(files)}
        try:
            _check_present(directory, renames, listed)
            if index is not None:
                renames[INDEX_NAME] = temp_name(INDEX_NAME, save_id)
                directory.commit(renames[INDEX_NAME], index.encode(), sync=sync)
            renames[SIDECAR_NAME] = temp_name(SIDECAR_NAME, save_id)  # moved last
            directory.commit(renames[SIDECAR_NAME], sidecar.encode(), sync=sync)
            superseded = tuple(n for n in sorted(listed) if is_ours(n) and n not in renames)
            journal = Journal(save_id, renames, superseded)
            if sync:
                directory.sync()
            directory.commit(JOURNAL_NAME, journal.encode(), sync=sync)
        except BaseException:
            with contextlib.suppress(OSError):
                directory.remove(renames.values())
            raise
        complete(directory, journal, sync=sync, lock=lock)
        _remove_stale(directory, listed, stamp_of(save_id))


def complete(directory: Store, journal: Journal, *, sync: bool, lock: HeldLock) -> None:
    """Carry out a committed journal: remove, move every file into place, drop the journal."""
    directory.remove(journal.remove)
    for final, temp in journal.renames.items():
        lock.refresh()  # a move is a copy on object stores: many large files take minutes
        directory.rename(temp, final)
    if sync:
        directory.sync()
    directory.remove([JOURNAL_NAME])


def _check_present(directory: Store, renames: dict[str, str], listed: list[str]) -> None:
    missing = sorted(set(renames.values()) - set(listed))
    if missing:
        raise ConcurrentSaveError(
            f"{directory.url}: expected this save's {len(renames)} files before committing, "
            f"found {len(missing)} removed (e.g. {missing[0]}) by a newer save to the same "
            "folder; nothing was committed, the newer checkpoint is intact"
        )


def _remove_stale(directory: Store, listed: list[str], started: int) -> None:
    """Remove, of the files ``listed`` before the commit, temporary files of saves that
    started before ``started`` (ns): they never commit (step 1). Temporary files of newer
    saves stay: those saves may still commit."""
    stale = []
    for name in listed:
        match = _TEMP.fullmatch(name)
        if match and is_ours(match["name"]) and older_save(match["save"], started):
            stale.append(name)
    with contextlib.suppress(OSError):
        directory.remove(stale)
