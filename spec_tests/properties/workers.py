"""Spec section 5 for writers with threads: a failure on a worker thread fails the save.

A threaded writer (torch's ``FileSystemWriter(thread_count=4)``, dcp_impl's
``thread_count``) hands items to threads it starts. The item here is a tensor that
only the thread running the save may touch: any operation on it from another thread
raises :class:`~spec_tests.sim.harness.InjectedFault` there, whether the worker resolves it,
copies it or serializes it. So the failure comes from the stored item on the worker,
not from ``resolve_data`` on the caller's thread. If any worker raised, the save must
raise that failure and commit nothing; a writer that never uses another thread must
save and load the values exactly.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from hypothesis import given, note
from hypothesis import strategies as st

from spec_tests.backends import Backend
from spec_tests.contract.verdicts import ContractViolation, chain, may_refuse
from spec_tests.plugin.profiles import few
from spec_tests.properties.checks import (
    Location,
    assert_nothing_committed,
    check_load,
    draw_tensor,
)
from spec_tests.sim import harness

__all__ = ["ThreadBound", "WorkerFailureProperties"]


class ThreadBound(torch.Tensor):
    """A tensor usable only on the thread that made it; elsewhere every operation raises.

    Results of operations (on the owning thread) are plain tensors, so a backend that
    copies or detaches the item first stores ordinary data. ``refusals`` collects the
    names of the threads that were refused.
    """

    _owner: int
    refusals: list[str]

    @staticmethod
    def __new__(cls, data: torch.Tensor, refusals: list[str]) -> ThreadBound:
        made = torch.Tensor._make_subclass(cls, data)
        made._owner = threading.get_ident()
        made.refusals = refusals
        return made

    @classmethod
    def __torch_function__(
        cls,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        for bound in _bound_in(args, kwargs or {}):
            if threading.get_ident() != bound._owner:
                name = threading.current_thread().name
                bound.refusals.append(name)
                raise harness.InjectedFault(
                    f"{getattr(func, '__name__', func)} on thread {name!r}: this stored item "
                    "fails on purpose on any thread but the one running the save"
                )
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))

    # torch.save pickles a subclass as itself: the owning thread stores a plain tensor.
    def __reduce_ex__(self, protocol: Any) -> Any:
        return torch.Tensor.__reduce_ex__(self.as_subclass(torch.Tensor), protocol)


def _bound_in(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[ThreadBound]:
    flat = [*args, *kwargs.values()]
    flat += [x for a in list(flat) if isinstance(a, list | tuple) for x in a]
    return [a for a in flat if isinstance(a, ThreadBound)]


class WorkerFailureProperties:
    """Writers with threads surface a worker's failure and commit nothing."""

    @few(10)
    @given(data=st.data())
    def test_worker_thread_failure_fails_save(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Items that fail on any thread but the caller's fail the save there, never silently.

        Several entries, so that a writer spreading items over threads gives workers some.
        """
        count = data.draw(st.integers(4, 8), label="entries")
        plain = {
            f"w{k}": draw_tensor(data, dcp_backend, min_dims=1, max_dims=2) for k in range(count)
        }
        refusals: list[str] = []
        state = {k: ThreadBound(v, refusals) for k, v in plain.items()}
        location = dcp_location()
        with harness.repro(dcp_backend, entries=sorted(plain)), _unsurfaced() as lost:
            # Through may_refuse: the harness's own verdict (a lost thread error it caught, say)
            # is never taken for the save failing with the worker's fault.
            with may_refuse("a save whose items fail on worker threads") as saving:
                harness.save(dcp_backend, location, [state])
            if saving.error is not None:
                _check_failed_save(dcp_backend, location, plain, refusals, saving.error)
                return
            if refusals:
                raise ContractViolation(
                    f"the stored items raised InjectedFault on worker thread(s) "
                    f"{sorted(set(refusals))}, yet write_data's future and finish succeeded: "
                    "the worker thread's failure was lost and a checkpoint committed"
                ) from (lost[0] if lost else None)
            note("no worker thread touched the items: the writer used the caller's thread")
            check_load(dcp_backend, location, plain)


@contextlib.contextmanager
def _unsurfaced() -> Iterator[list[BaseException]]:
    """Collect exceptions that end a thread unhandled (threading.excepthook) meanwhile.

    They are the worker failures a backend never surfaced; the verdict carries the first,
    and pytest's end-of-test check does not report them a second time.
    """
    lost: list[BaseException] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            lost.append(args.exc_value)

    threading.excepthook = hook
    try:
        yield lost
    finally:
        threading.excepthook = previous


def _check_failed_save(
    backend: Backend,
    location: str,
    plain: Mapping[str, torch.Tensor],
    refusals: list[str],
    exc: BaseException,
) -> None:
    """A failed save passes only if it carries the worker's fault and committed nothing."""
    if not refusals:
        raise exc  # the save failed on plain values that no thread refused: a real failure
    if not any(isinstance(e, harness.InjectedFault) for e in chain(exc)):
        raise ContractViolation(
            f"the stored items raised InjectedFault on worker thread(s) {sorted(set(refusals))} "
            f"but the save failed without it ({type(exc).__name__}: {exc}): the worker "
            "thread's failure was lost, and only a later check noticed"
        ) from exc
    note(f"save raised {type(exc).__name__} carrying the worker's InjectedFault")
    assert_nothing_committed(backend, location, dict(plain), "the save failed on a worker thread")
