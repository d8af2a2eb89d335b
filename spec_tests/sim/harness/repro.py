"""Every failure explains and reproduces itself: the repro note attached to it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from hypothesis.vendor.pretty import pretty

from spec_tests.backends import Backend
from spec_tests.contract.replay import RUN, replay_note

__all__ = ["repro"]


@contextlib.contextmanager
def repro(backend: Backend, **fields: object) -> Iterator[None]:
    """Attach a reproduction note (backend, the case's fields, the replay command)."""
    try:
        yield
    except Exception as exc:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        lines = [f"DCP conformance failure for backend {backend.name!r} in {test}"]
        lines += [f"  {key} = {_short(value)}" for key, value in fields.items()]
        if RUN.current:
            lines.append(f"  replay: {RUN.current}  ({replay_note()})")
        exc.add_note("\n".join(lines))
        raise


def _short(value: object, limit: int = 400) -> str:
    text = pretty(value)  # hypothesis' printer: torch's repr fails on bits* tensors
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"
