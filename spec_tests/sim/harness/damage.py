"""Damaging a saved checkpoint on purpose: one flipped bit or one cut file.

Shared by the fault properties and ``python -m spec_tests probe``, so both damage a
checkpoint the same way: through the backend's own ``corrupt``/``truncate`` hook when it
has one, else in one stored data file (local or behind a URL).
"""

from __future__ import annotations

import posixpath
import random
from typing import TYPE_CHECKING

from fsspec.core import url_to_fs

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from spec_tests.backends import Backend

__all__ = ["DAMAGES", "damage", "data_files", "flip_stored"]

#: The kinds of damage :func:`damage` applies.
DAMAGES = ("corrupt", "truncate")
_METADATA_NAMES = (".metadata", ".json")


def data_files(location: str) -> tuple[AbstractFileSystem, list[str]]:
    """The location's filesystem and its non-empty stored files other than metadata."""
    # One code path for a local directory and an object-store prefix alike.
    fs, root = url_to_fs(location)
    fs.invalidate_cache(root)  # a listing cached before the save would miss its files
    found = fs.find(root, detail=True)
    files = [path for path, info in sorted(found.items()) if (info.get("size") or 0) > 0]
    names = [(path, posixpath.basename(path)) for path in files]
    return fs, [p for p, n in names if not n.endswith(_METADATA_NAMES) and "metadata" not in n]


def damage(backend: Backend, location: str, how: str, rng: random.Random) -> str | None:
    """Apply ``how`` (one of :data:`DAMAGES`) to the checkpoint at ``location``.

    Returns what was done, or None when there was nothing to damage (no hook, no data file).
    """
    if how not in DAMAGES:
        raise ValueError(f"damage kind {how!r}: expected one of {DAMAGES}")
    hook = getattr(backend, how, None)
    if callable(hook):
        hook(location, rng)
        return f"{how} hook of backend {backend.name!r}"
    fs, files = data_files(location)
    if not files:
        return None
    target = rng.choice(files)
    raw = bytearray(fs.cat_file(target))
    if how == "truncate":
        raw = raw[: rng.randrange(len(raw))]
    else:
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    fs.pipe_file(target, bytes(raw))
    return f"{how}d {target}"


def flip_stored(location: str, needle: bytes, bit: int) -> str | None:
    """Flip bit ``bit`` of the one stored copy of ``needle`` among the location's data files.

    Returns what was done, or None where ``needle`` is not found exactly once (a backend that
    transforms what it stores, or bytes that happen to repeat).
    """
    fs, files = data_files(location)
    found = []
    for path in files:
        raw = fs.cat_file(path)
        at = raw.find(needle)
        if at >= 0:
            found.append((path, raw, at))
            if raw.find(needle, at + 1) >= 0:
                return None
    if len(found) != 1:
        return None
    path, raw, at = found[0]
    changed = bytearray(raw)
    changed[at + bit // 8] ^= 1 << (bit % 8)
    fs.pipe_file(path, bytes(changed))
    return f"bit {bit} of the bytes at offset {at} of {path}"
