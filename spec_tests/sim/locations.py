"""Checkpoint locations: local directories or fsspec URL prefixes, made and removed alike.

The plugin hands out one fresh location per example under ``--dcp-root``; perf does the
same under ``--perf-root``. Locations are joined as text, so a URL keeps its user's
spelling (protocol, chained protocols) for the backend.
"""

from __future__ import annotations

import uuid

from dcp_impl.store import is_url

__all__ = ["child", "is_url", "makedirs", "remove"]


def child(parent: str, prefix: str) -> str:
    """A new, unique location under ``parent``: ``<parent>/<prefix><16 hex digits>``."""
    # "/" separates local paths on POSIX too.
    return f"{parent.rstrip('/')}/{prefix}{uuid.uuid4().hex[:16]}"


def makedirs(location: str) -> None:
    """Create ``location``: a local directory; on an object store (no directories) nothing."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(location)
    fs.makedirs(path, exist_ok=True)


def remove(location: str, *, best_effort: bool = False) -> None:
    """Delete ``location`` and everything under it; a missing location is no error.

    With ``best_effort`` no error is (cleanup after a test: a dead server is no failure).
    """
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(location)
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass  # nothing was written there (a save that failed early)
    except Exception:
        if not best_effort:
            raise
