"""Segments of shared reads that no rank can still use, and how to tell.

A rank that dies before it joins its load's segment, while every peer succeeds, leaves the
segment behind: its peers cannot tell it from a late rank, so none of them removes it. The
next load on the host that creates a segment removes such leftovers: segments whose joined
ranks have all exited and that nothing has changed for longer than a rank waits for a peer
(``timeout``), so no rank of that load can still be waiting for it or be on its way.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time

__all__ = [
    "PID_CHARS",
    "SEGMENT_NAME",
    "abandoned_segments",
    "process_gone",
    "read_mark",
    "remove_stale_segments",
]

#: A segment's folder name: ``dcp_impl-<load>-h<host number>`` (transfer._share_plan).
SEGMENT_NAME = re.compile(r"dcp_impl-.+-h\d+")
#: The most characters of a ``pid-<rank>`` mark read back (a pid is a few digits).
PID_CHARS = 32


def process_gone(pid_text: str | None) -> bool:
    """Whether the process ``pid_text`` names has exited (an unreadable pid says no)."""
    if pid_text is None or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # a process of another user holds the pid: it exists
    return False


def remove_stale_segments(root: str, keep: str, timeout: float) -> list[str]:
    """Remove the stale segments under ``root`` other than ``keep``; the folders removed."""
    removed = []
    for folder in _segments(root):
        if folder != keep and _stale(folder, timeout):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def abandoned_segments(root: str) -> set[str]:
    """The names of the segments under ``root`` whose joined ranks have all exited (or that no
    rank joined): what loads left behind. A load still running has a live member."""
    abandoned = set()
    for folder in _segments(root):
        with contextlib.suppress(OSError):  # removed meanwhile: not left behind
            if all(map(process_gone, _members(folder, os.listdir(folder)))):
                abandoned.add(os.path.basename(folder))
    return abandoned


def _segments(root: str) -> list[str]:
    with os.scandir(root) as entries:
        return [e.path for e in entries if SEGMENT_NAME.fullmatch(e.name) and e.is_dir()]


def _members(folder: str, names: list[str]) -> list[str | None]:
    """The pid marks, among ``folder``'s entries ``names``, of the ranks that joined it."""
    return [read_mark(os.path.join(folder, n), PID_CHARS) for n in names if n.startswith("pid-")]


def _stale(folder: str, timeout: float) -> bool:
    try:
        names = os.listdir(folder)
        changed = max(os.stat(os.path.join(folder, n)).st_mtime for n in ["", *names])
        if time.time() - changed <= timeout:
            return False
        pids = _members(folder, names)
    except OSError:
        return False  # removed meanwhile, or not ours to read
    return all(map(process_gone, pids))


def read_mark(path: str, limit: int) -> str | None:
    """At most ``limit`` characters of the mark file ``path``; None if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(limit)
    except OSError:
        return None
