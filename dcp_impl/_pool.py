"""A thread pool whose first failure stops the work and reaches the caller intact."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar, cast

__all__ = ["Worker", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")
_T_contra = TypeVar("_T_contra", contravariant=True)
_R_co = TypeVar("_R_co", covariant=True)


class Worker(Protocol[_T_contra, _R_co]):
    """Per-thread state for :func:`parallel_map`: called once per item, closed at the end."""

    def __call__(self, item: _T_contra, /) -> _R_co: ...

    def close(self) -> None: ...


def parallel_map(
    items: Sequence[T], make_worker: Callable[[], Worker[T, R]], *, thread_count: int = 1
) -> list[R]:
    """Apply workers to ``items`` on ``thread_count`` threads; results in item order.

    Each thread makes one worker and pulls the next item in order. After the first
    failure no thread starts another item; the first exception is re-raised here with its
    original traceback, and the others are attached to it as notes.
    """
    slots: list[R | None] = [None] * len(items)
    pending = iter(range(len(items)))
    lock = threading.Lock()
    stop = threading.Event()

    def drain() -> None:
        worker = make_worker()
        try:
            while not stop.is_set():
                with lock:
                    index = next(pending, None)
                if index is None:
                    return
                try:
                    slots[index] = worker(items[index])
                except BaseException:
                    stop.set()
                    raise
        finally:
            worker.close()

    threads = max(1, min(thread_count, len(items)))
    if threads == 1:
        drain()
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="dcp_impl-io") as pool:
            futures = [pool.submit(drain) for _ in range(threads)]
        errors = [e for f in futures if (e := f.exception()) is not None]
        if errors:
            for other in errors[1:]:
                errors[0].add_note(f"another I/O thread also failed: {other!r}")
            raise errors[0]
    return cast("list[R]", slots)  # no failure, so every slot was filled
