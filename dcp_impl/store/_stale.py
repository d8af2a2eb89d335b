"""Segments of shared reads that no rank can still use, and how to tell.

A rank that dies before it joins its load's segment, while every peer succeeds, leaves the
segment behind: its peers cannot tell it from a late rank, so none of them removes it. The
next load on the host that creates a segment removes such leftovers: segments whose joined
ranks have all exited and that nothing has changed for longer than a rank waits for a peer
(``timeout``), so no rank of that load can still be waiting for it or be on its way.
"""

from __future__ import annotations

import os
import re
import shutil
import time

__all__ = ["SEGMENT_NAME", "process_gone", "remove_stale_segments"]

#: A segment's folder name: ``dcp_impl-<load>-h<host number>`` (transfer._share_plan).
SEGMENT_NAME = re.compile(r"dcp_impl-.+-h\d+")


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
    with os.scandir(root) as entries:
        folders = [e.path for e in entries if SEGMENT_NAME.fullmatch(e.name) and e.is_dir()]
    for folder in folders:
        if folder != keep and _stale(folder, timeout):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _stale(folder: str, timeout: float) -> bool:
    try:
        names = os.listdir(folder)
        changed = max(os.stat(os.path.join(folder, n)).st_mtime for n in ["", *names])
        if time.time() - changed <= timeout:
            return False
        pids = [_read(os.path.join(folder, n)) for n in names if n.startswith("pid-")]
    except OSError:
        return False  # removed meanwhile, or not ours to read
    return all(map(process_gone, pids))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(32)
    except OSError:
        return None
