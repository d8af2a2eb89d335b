"""Checked driving: DCP's call sequence (:mod:`spec_tests.sim.driver`) with the contract enforced.

:func:`save` and :func:`load` play N simulated ranks, one writer (reader) per rank, through
the driver with :class:`_Checked` calls: each backend call is labelled in any error it
raises (BaseExceptions such as torch's ``CheckpointException`` become
:class:`BackendBaseException`, so hypothesis treats them as failures and shrinks), what it
returns is checked (types, one plan per rank, one WriteResult per WriteItem, every ReadItem
committed once), waits are bounded, and a thread the backend started that dies of an
exception nobody surfaced fails the operation. Every such check raises
:class:`~spec_tests.contract.verdicts.ContractViolation`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from hypothesis import note
from hypothesis.errors import InvalidArgument
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, SavePlan
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult

from spec_tests.backends import Backend
from spec_tests.contract.verdicts import ContractViolation
from spec_tests.sim import driver
from spec_tests.sim.driver import Saved
from spec_tests.sim.harness import staged
from spec_tests.sim.harness.planners import (
    FailOn,
    Request,
    SpecLoadPlanner,
    SpecSavePlanner,
    as_fault,
    index_key,
)
from spec_tests.sim.locations import is_url

__all__ = [
    "BackendBaseException",
    "Saved",
    "call",
    "load",
    "save",
    "threads_surface_errors",
]

_T = TypeVar("_T")
_FUTURE_TIMEOUT_S = 300.0


class BackendBaseException(Exception):
    """A backend raised a BaseException (e.g. torch's CheckpointException); chained as cause."""


def call(label: str, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """Call a backend method; name it in any error, and turn BaseExceptions into Exceptions."""
    try:
        # A backend's warnings (torch-fs warns on every overwrite) are not contract
        # violations, and a project's "filterwarnings = error" must not make them so.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn(*args, **kwargs)
        for warning in caught:
            _note(f"{label} warned: {warning.category.__name__}: {warning.message}")
        return result
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except Exception as exc:
        exc.add_note(f"raised by {label}")
        raise
    except BaseException as exc:
        if type(exc).__module__.startswith("hypothesis"):
            raise  # hypothesis' own control flow (StopTest etc.)
        raise BackendBaseException(
            f"{label} raised {type(exc).__name__}, a BaseException that is not an Exception: {exc}"
        ) from exc


def _note(text: str) -> None:
    """``hypothesis.note`` inside a property; nothing outside one."""
    with contextlib.suppress(InvalidArgument):
        note(text)


def _wait(label: str, future: Any) -> Any:
    """Wait for a torch Future (or concurrent.futures.Future) and return its value."""
    if not hasattr(future, "wait") and not hasattr(future, "result"):
        raise ContractViolation(f"{label} returned {future!r}: expected a Future")
    deadline = time.monotonic() + _FUTURE_TIMEOUT_S
    while not future.done():
        if time.monotonic() > deadline:
            raise ContractViolation(f"{label}'s future did not complete in {_FUTURE_TIMEOUT_S} s")
        time.sleep(0.001)
    if hasattr(future, "wait"):
        return call(f"{label} future", future.wait)
    return call(f"{label} future", future.result)


@contextlib.contextmanager
def threads_surface_errors(what: str) -> Iterator[None]:
    """Raise ContractViolation if a thread dies of an exception during a block that succeeds.

    A backend that hands work to threads must surface their failures through the call or
    its future; an exception that only reaches ``threading.excepthook`` is a lost error (the
    operation reports success over missing work). If the block fails anyway, the lost
    errors are attached to its exception as notes. Blocks may overlap (concurrent saves in
    threads): each sees every error lost while it runs, and the hook in place before the
    first is restored when the last ends.
    """
    lost: list[threading.ExceptHookArgs] = []
    with _HOOK_LOCK:
        if not _ACTIVE:
            _PREVIOUS_HOOK[:] = [threading.excepthook]
            threading.excepthook = _record_everywhere
        _ACTIVE.append(lost)
    try:
        yield
    except BaseException as exc:
        for args in lost:
            exc.add_note(f"meanwhile a thread died: {_thread_error(args)}")
        raise
    finally:
        with _HOOK_LOCK:
            _ACTIVE.remove(lost)
            if not _ACTIVE:
                threading.excepthook = _PREVIOUS_HOOK.pop()
    if lost:
        raise ContractViolation(
            f"{what} succeeded, but a thread the backend started died of an exception that was "
            f"never surfaced: {_thread_error(lost[0])}"
            + (f" (and {len(lost) - 1} more)" if len(lost) > 1 else "")
        ) from lost[0].exc_value


_HOOK_LOCK = threading.Lock()
_ACTIVE: list[list[threading.ExceptHookArgs]] = []
_PREVIOUS_HOOK: list[Callable[[threading.ExceptHookArgs], object]] = []


def _record_everywhere(args: threading.ExceptHookArgs) -> None:
    with _HOOK_LOCK:
        for lost in _ACTIVE:
            lost.append(args)


def _thread_error(args: threading.ExceptHookArgs) -> str:
    name = args.thread.name if args.thread is not None else "?"
    return f"thread {name!r} raised {args.exc_type.__name__}: {args.exc_value}"


Hook = Callable[[str, int], None]


def _noop(_label: str, _rank: int) -> None:
    return None


def _check_results(rank: int, plan: SavePlan, written: object) -> None:
    if not isinstance(written, list) or not all(isinstance(w, WriteResult) for w in written):
        raise ContractViolation(
            f"rank {rank} write_data future gave {written!r}: expected list[WriteResult]"
        )
    sizes = [w.size_in_bytes for w in written]
    if not all(type(n) is int and n >= 0 for n in sizes):  # torch declares it an int
        raise ContractViolation(
            f"rank {rank}: WriteResult.size_in_bytes expected ints >= 0, got {sizes!r}"
        )
    wanted = Counter(index_key(item.index) for item in plan.items)
    got = Counter(index_key(w.index) for w in written)
    if wanted != got:
        raise ContractViolation(
            f"rank {rank}: expected one WriteResult per WriteItem; missing {dict(wanted - got)}, "
            f"unexpected {dict(got - wanted)}"
        )


# Every save_id a save has reported in this process: a later save reporting one again is not
# a fresh save (a writer reused after reset, a save_id derived from the location).
_SAVE_IDS: set[str] = set()


def _within(reported: object, path: str) -> bool:
    """Whether ``reported`` is the location ``path`` or one inside it (torch's consolidating HF
    writer reports ``path/sharded``, where its DCP shards go)."""
    if not isinstance(reported, str | os.PathLike):
        return False
    text = str(os.fspath(reported))
    if is_url(path) or is_url(text):
        inner, outer = text.rstrip("/"), path.rstrip("/")
    else:
        inner, outer = (os.path.normpath(os.path.abspath(p)) for p in (text, path))
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _check_storage_metas(backend: str, path: str, metas: Sequence[tuple[int, object]]) -> None:
    """Raise ContractViolation unless every ``storage_meta()`` of a save names ``path`` (or a
    location inside it) and a save_id no earlier save reported (None, or fields left None,
    claim nothing)."""
    fresh: set[str] = set()
    for rank, meta in metas:
        if meta is None:
            continue
        if not isinstance(meta, StorageMeta):
            raise ContractViolation(
                f"{backend} rank {rank}: storage_meta() returned {type(meta).__name__}: "
                "expected StorageMeta or None"
            )
        if meta.checkpoint_id is not None and not _within(meta.checkpoint_id, path):
            raise ContractViolation(
                f"{backend} rank {rank}: storage_meta().checkpoint_id is "
                f"{meta.checkpoint_id!r}: expected the location saved to, {path!r} (or one "
                "inside it)"
            )
        if meta.save_id is not None:
            if meta.save_id in _SAVE_IDS:
                raise ContractViolation(
                    f"{backend} rank {rank}: storage_meta().save_id {meta.save_id!r} was "
                    "reported by an earlier save: expected a fresh save_id for every save"
                )
            fresh.add(str(meta.save_id))
    _SAVE_IDS.update(fresh)


class _Checked(driver.Calls):
    """The driver's calls, labelled, checked and bounded (see the module docstring)."""

    def __init__(
        self, backend: str, role: str, extra: Mapping[str, Any], before_call: Hook = _noop
    ) -> None:
        self.backend, self.role, self.extra, self.before_call = backend, role, extra, before_call
        self.storage_metas: list[tuple[int, object]] = []

    def call(self, rank: int, name: str, fn: Callable[..., Any], /, *args: Any, **kw: Any) -> Any:
        # docstring inherited
        self.before_call(name, rank)
        result = call(f"{self.backend} {self.role} rank {rank}: {name}", fn, *args, **kw)
        if name == "storage_meta":
            self.storage_metas.append((rank, result))
        return result

    def returned(self, name: str, value: object, kind: type, count: int | None = None) -> None:
        # docstring inherited
        if not isinstance(value, kind):
            raise ContractViolation(
                f"{name} returned {type(value).__name__}: expected {kind.__name__}"
            )
        if isinstance(value, list) and count is not None and len(value) != count:
            raise ContractViolation(f"{name} returned {len(value)} plans for {count} ranks")

    def wait_written(self, rank: int, plan: SavePlan, future: Any) -> list[WriteResult]:
        # docstring inherited
        written = _wait(f"{self.backend} rank {rank} write_data", future)
        _check_results(rank, plan, written)
        return list(written)

    def wait_read(self, rank: int, plan: LoadPlan, planner: LoadPlanner, future: Any) -> None:
        # docstring inherited
        _wait(f"{self.backend} rank {rank} read_data", future)
        assert isinstance(planner, SpecLoadPlanner)  # the harness drives its own planners
        planner.check_complete(plan, rank)


def save(
    backend: Backend,
    path: str,
    states: Sequence[Mapping[str, Any]],
    *,
    fail_on: FailOn | None = None,
    extra_kwargs: Mapping[str, Any] | None = None,
    before_call: Hook = _noop,
    writers: Sequence[StorageWriter] | None = None,
    checkpoint_id: bool = True,
    collectives: bool = True,
) -> Saved:
    """Save ``states[r]`` from simulated rank ``r``; return what ``finish`` was given.

    Values are tensors (saved whole), :class:`~spec_tests.sim.harness.tensors.Shards` (chunks of a
    sharded tensor) or any other object (stored as BytesIO). ``fail_on`` (a predicate or a
    :class:`~spec_tests.sim.harness.planners.Fault`) makes ``resolve_data`` raise
    :class:`~spec_tests.sim.harness.planners.InjectedFault` for matching items; ``extra_kwargs`` go
    to every method whose abstract signature takes ``**kwargs``; ``before_call(label, rank)``
    runs before each backend call. ``checkpoint_id=False`` calls ``reset()`` without
    ``path``, as ``dcp.save`` does when given a storage_writer and no checkpoint_id
    (``writers`` made for ``path`` then). ``collectives=False`` saves as
    ``dcp.save(..., use_collectives=False)`` does (:func:`spec_tests.sim.driver.save`).
    """
    with threads_surface_errors(f"{backend.name} save"):
        fault = as_fault(fail_on)
        ws = writers if writers is not None else [backend.make_writer(path) for _ in states]
        planners = [SpecSavePlanner(fault) for _ in states]
        checked = _Checked(backend.name, "writer", dict(extra_kwargs or {}), before_call)
        target = path if checkpoint_id else None

        def run(ws: Sequence[StorageWriter], states: list[dict[str, Any]]) -> Saved:
            return driver.save(ws, target, planners, states, checked, collectives=collectives)

        mode = staged.async_mode(backend)
        plain = [dict(s) for s in states]
        saved = run(ws, plain) if mode is None else staged.save(mode, ws, plain, run)
        _check_storage_metas(backend.name, path, checked.storage_metas)
        return saved


def load(
    backend: Backend,
    path: str,
    requests: Sequence[Mapping[str, Request]],
    *,
    extra_kwargs: Mapping[str, Any] | None = None,
    fail_on: FailOn | None = None,
    readers: Sequence[StorageReader] | None = None,
    before_call: Hook = _noop,
    collectives: bool = True,
) -> list[dict[str, Any]]:
    """Load ``requests[r]`` on simulated rank ``r``; return each rank's results.

    A :class:`~spec_tests.sim.harness.planners.TensorRequest` yields the list of destination
    tensors, one per requested box (pre-filled with
    :data:`~spec_tests.sim.harness.tensors.SENTINEL` bytes, so regions a backend never wrote show
    up); a :class:`~spec_tests.sim.harness.planners.BytesRequest` yields the object. ``fail_on``
    makes ``resolve_tensor`` raise an injected fault for matching read items;
    ``before_call(label, rank)`` runs before each backend call. ``collectives=False`` loads
    from rank-local metadata (``read_metadata(rank=r)``).
    """
    with threads_surface_errors(f"{backend.name} load"):
        fault = as_fault(fail_on)
        rs = readers if readers is not None else [backend.make_reader(path) for _ in requests]
        planners = [SpecLoadPlanner(fault) for _ in requests]
        checked = _Checked(backend.name, "reader", dict(extra_kwargs or {}), before_call)
        driver.load(
            rs, path, planners, [dict(r) for r in requests], checked, collectives=collectives
        )
        return [planner.results() for planner in planners]
