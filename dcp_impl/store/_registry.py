"""Which checkpoint ids name a local path: one answer for every backend."""

from __future__ import annotations

import os


def is_local_path(checkpoint_id: object) -> bool:
    """Whether ``checkpoint_id`` can name a local directory. Total: never raises."""
    try:
        text = os.fspath(checkpoint_id)  # type: ignore[call-overload]
    except Exception:  # not path-like, or a hostile __fspath__: a total function must not raise
        return False
    # URLs belong to other backends; NUL bytes can never name a file.
    return isinstance(text, str) and bool(text) and "://" not in text and "\0" not in text
