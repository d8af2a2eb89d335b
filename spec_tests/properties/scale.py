"""Spec section 10: metadata at scale costs time and memory in proportion to its size.

The suite cannot write a backend's metadata format itself, so it makes the backend write a
large one: one rank saves many one-element chunks of one tensor (or, where the backend does
not claim ``multi-chunk``, many one-element tensors), at ``n`` and at ``10 n``. Reading the
metadata, planning the load and loading it must then take at most :data:`TIME_RATIO` times
as long at ``10 n`` as at ``n``, and trace at most :data:`MEMORY_RATIO` times the memory: a
linear backend takes at most 10 times, a quadratic one (a linear search per chunk, a list
copied per item) up to 100. Each time is the best of two runs, against noise, each with the
heap the process held before it frozen (its collections walk only what the run made), and a time
ratio over the bound is measured again (up to :data:`ATTEMPTS` times) before it is a
violation: a shared machine can stretch one measurement, but a quadratic cost is over the
bound every time. Sizes grow under the nightly profile.
"""

from __future__ import annotations

import contextlib
import gc
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import torch
from hypothesis import settings

from dcp_impl.layout import Box
from spec_tests.backends import Backend, claims
from spec_tests.contract.verdicts import ContractViolation
from spec_tests.plugin.profiles import NIGHTLY
from spec_tests.properties.checks import Location, claimed
from spec_tests.sim import harness

__all__ = ["ATTEMPTS", "MEMORY_RATIO", "TIME_RATIO", "ScaleProperties", "frozen_heap", "sizes"]

TIME_RATIO = 15.0
"""Most times as long as 10 times the chunks may take to read and load. Linear costs plus a
fixed part scale by at most 10 (the built-ins measured 8 to 11); one linear search per item
already scales by 20."""
MEMORY_RATIO = 15.0
"""Most times the traced memory 10 times the chunks may take (linear: at most 10)."""
ATTEMPTS = 3
"""Measurements of the time ratio before one over :data:`TIME_RATIO` is a violation. Under
``--jobs=2`` on two cores a linear backend once measured 16x (CPU time counts the worker
threads' spinning, which contention stretches); it was under 11x on the next measurement."""
_CI_CHUNKS = 200
_NIGHTLY_CHUNKS = 2_000


def sizes() -> tuple[int, int]:
    """The two chunk counts compared under the current hypothesis profile."""
    small = _NIGHTLY_CHUNKS if settings.get_current_profile_name() == NIGHTLY else _CI_CHUNKS
    return small, 10 * small


def _state(backend: Backend, n: int) -> tuple[dict[str, Any], dict[str, harness.Request]]:
    """What one rank saves (``n`` one-element chunks or tensors) and what a load asks for."""
    dtypes = claimed(backend)
    dtype = torch.float32 if torch.float32 in dtypes else dtypes[0]
    value = torch.zeros(n, dtype=dtype)
    if claims(backend, "multi-chunk"):
        boxes = tuple(Box((i,), (1,)) for i in range(n))
        shards = harness.Shards((n,), tuple((b, value[i : i + 1]) for i, b in enumerate(boxes)))
        whole = harness.TensorRequest(dtype, (n,), (Box.full((n,)),))
        return {"t": shards}, {"t": whole}
    state = {f"t{i}": value[i : i + 1].clone() for i in range(n)}
    request = harness.TensorRequest(dtype, (1,), (Box.full((1,)),))
    return state, dict.fromkeys(state, request)


def _read_and_load(backend: Backend, path: str, requests: dict[str, harness.Request]) -> None:
    reader = backend.make_reader(path)
    harness.call("reset", reader.reset, path)
    harness.call("read_metadata", reader.read_metadata)
    harness.load(backend, path, [requests])


def _best_seconds(call: Callable[[], None], rounds: int = 2) -> float:
    # CPU seconds of this process (every thread), not wall time: other processes on a shared
    # CI machine stretch wall time at random, which a ratio of two runs cannot cancel.
    best = float("inf")
    for _ in range(rounds):
        with frozen_heap():
            start = time.process_time()
            call()
            best = min(best, time.process_time() - start)
    return best


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect, then freeze what the process holds until the block ends, so that a full
    collection inside walks only what the block made. Unfrozen, the full collections that
    10 times the chunks trigger walk all of torch's objects as well: a cost of the process,
    not of the backend, that grows with whatever else the process holds, and that once failed
    linear backends (docs/known-bugs.md, "Withdrawn")."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _peak(call: Callable[[], None]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class ScaleProperties:
    """Reading and loading a checkpoint of many chunks scales linearly, in time and memory."""

    def test_metadata_and_planning_scale_linearly(
        self, dcp_backend: Backend, dcp_location: Location
    ) -> None:
        """Ten times the chunks cost at most :data:`TIME_RATIO` times the time and
        :data:`MEMORY_RATIO` times the traced memory to read the metadata, plan and load."""
        loads, peaks = [], []
        for n in sizes():
            path = dcp_location()
            state, requests = _state(dcp_backend, n)
            harness.save(dcp_backend, path, [state])
            load = lambda path=path, requests=requests: _read_and_load(  # noqa: E731
                dcp_backend, path, requests
            )
            peaks.append(_peak(load))  # also warms: first-use imports and caches are no scaling
            loads.append(load)
        (small, large), (m_small, m_large) = sizes(), peaks
        with harness.repro(dcp_backend, chunks=(small, large)):
            if m_large > MEMORY_RATIO * m_small:
                raise ContractViolation(
                    f"read_metadata + load planning + load of {large} chunks traced "
                    f"{m_large} bytes at peak, {m_large / m_small:.0f}x the {m_small} of "
                    f"{small} chunks: expected at most {MEMORY_RATIO:.0f}x (linear: ~10x)"
                )
            for _ in range(ATTEMPTS):
                t_small, t_large = (_best_seconds(load) for load in loads)
                if t_large <= TIME_RATIO * t_small:
                    break
            else:
                raise ContractViolation(
                    f"read_metadata + load planning + load of {large} chunks took "
                    f"{t_large:.3f} s, {t_large / t_small:.0f}x the {t_small:.3f} s of {small} "
                    f"chunks (over {TIME_RATIO:.0f}x in each of {ATTEMPTS} measurements): "
                    f"expected at most {TIME_RATIO:.0f}x (linear: ~10x)"
                )
