"""The cyclic garbage collector paused while a large document is parsed."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["collector_paused"]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a document is parsed and decoded.

    Parsing allocates an object per JSON value, none in a reference cycle; every few hundred
    allocations would start a collection that finds nothing to free and, on a heap this
    large, costs more than the parsing itself (perf/README.md "Metadata codec"). A full
    collection also walks every object the process holds (torch's own, the model's), so one
    that falls in a parse costs the caller in proportion to its heap, not to the document.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
