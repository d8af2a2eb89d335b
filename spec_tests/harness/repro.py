"""Every failure explains and reproduces itself: the repro note attached to it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from hypothesis.vendor.pretty import pretty

from spec_tests.backends import Backend

__all__ = ["repro"]


@contextlib.contextmanager
def repro(backend: Backend, **fields: object) -> Iterator[None]:
    """Attach a reproduction note (backend, the case's fields, how to rerun) to any failure."""
    try:
        yield
    except Exception as exc:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        lines = [f"DCP conformance failure for backend {backend.name!r} in {test}"]
        lines += [f"  {key} = {_short(value)}" for key, value in fields.items()]
        lines.append(
            f"  rerun: pytest --pyargs spec_tests --dcp-backend=<spec of {backend.name!r}> "
            f"-k {test.rsplit('::', 1)[-1]!r}; with --hypothesis-profile=dcp-ci hypothesis prints "
            "a @reproduce_failure blob above that replays this exact example"
        )
        exc.add_note("\n".join(lines))
        raise


def _short(value: object, limit: int = 400) -> str:
    text = pretty(value)  # hypothesis' printer: torch's repr fails on bits* tensors
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"
