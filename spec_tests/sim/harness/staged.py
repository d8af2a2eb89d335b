"""A save as ``dcp.async_save`` presents it to a backend: staged, then written in the background.

A backend whose ``async_save`` member is ``"thread"`` or ``"process"`` (an asynchronous
configuration, docs/conformance.md section 1) has every harness save, in every property, made
this way, so the whole input space reaches its staging path:

1. each rank's tensors are staged as ``async_save`` stages them: by the writer if it is an
   ``AsyncStager``, else by torch's ``DefaultStager`` (CPU, no shared memory, blocking); a
   staging future is waited for, and ``synchronize_staging`` called where the stager asks;
2. in ``"process"`` mode each writer is pickled and unpickled, as the upload process receives
   it;
3. the caller's tensors then change (every byte of their storages), as training goes on, and
   are changed back once the save ends: a stager that kept the live tensors saves the changed
   bytes, which the property's exact load reports;
4. the storage calls run on another thread, whose error is the save's.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Literal, TypeVar, cast

import torch
from torch.distributed.checkpoint.staging import AsyncStager, DefaultStager, StagingOptions
from torch.distributed.checkpoint.storage import StorageWriter

from spec_tests.contract.capabilities import ASYNC_MODES
from spec_tests.contract.verdicts import ContractViolation
from spec_tests.sim.harness.tensors import Shards

__all__ = ["AsyncMode", "async_mode", "save"]

AsyncMode = Literal["thread", "process"]

T = TypeVar("T")

_TIMEOUT_S = 300.0


def async_mode(backend: object) -> AsyncMode | None:
    """The backend's ``async_save`` member: None (synchronous saves) or a mode it names."""
    mode = getattr(backend, "async_save", None)
    if mode is not None and mode not in ASYNC_MODES:
        raise ContractViolation(
            f"{getattr(backend, 'name', backend)!r}: async_save must be None or one of "
            f"{', '.join(ASYNC_MODES)}; found {mode!r}"
        )
    return cast("AsyncMode | None", mode)


def save(
    mode: AsyncMode,
    writers: Sequence[StorageWriter],
    states: Sequence[dict[str, Any]],
    run: Callable[[Sequence[StorageWriter], list[dict[str, Any]]], T],
) -> T:
    """``run(writers, staged_states)`` as an async save in ``mode`` makes it (module docstring)."""
    stagers = [_stager(writer) for writer in writers]
    try:
        staged = [_stage(stager, state) for stager, state in zip(stagers, states, strict=True)]
        if mode == "process":
            writers = [pickle.loads(pickle.dumps(writer)) for writer in writers]
        with _changed(states):
            return _in_background(lambda: run(writers, staged))
    finally:
        for stager in stagers:
            if isinstance(stager, DefaultStager):  # async_save closes what it made, not writers
                stager.close()


def _stager(writer: StorageWriter) -> AsyncStager:
    if isinstance(writer, AsyncStager):
        return writer
    return DefaultStager(StagingOptions(False, False, False, False))


def _stage(stager: AsyncStager, state: Mapping[str, Any]) -> dict[str, Any]:
    # The stager sees a flat dict of the rank's tensors (a sharded entry's chunks are tensors of
    # their own): the harness's Shards is no type a stager knows. Other values pass unchanged.
    flat: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            flat[key] = value
        elif isinstance(value, Shards):
            flat.update({f"{key}/{i}": chunk for i, (_, chunk) in enumerate(value.chunks)})
    result = stager.stage(flat)
    copied = result.result(timeout=_TIMEOUT_S) if isinstance(result, Future) else result
    if stager.should_synchronize_after_execute:
        stager.synchronize_staging()
    missing = flat.keys() - copied.keys()
    if missing:
        raise ContractViolation(f"stage() returned no entry for {sorted(missing)[:5]}")
    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            out[key] = copied[key]
        elif isinstance(value, Shards):
            chunks = tuple((box, copied[f"{key}/{i}"]) for i, (box, _) in enumerate(value.chunks))
            out[key] = Shards(value.shape, chunks)
        else:
            out[key] = value
    return out


@contextlib.contextmanager
def _changed(states: Sequence[Mapping[str, Any]]) -> Iterator[None]:
    # Bit 0 of every byte of every storage the states' tensors view, each storage once (views
    # share them). XOR is its own inverse, so the second pass restores the values exactly.
    storages: dict[int, torch.Tensor] = {}
    for state in states:
        for value in state.values():
            tensors = [c for _, c in value.chunks] if isinstance(value, Shards) else [value]
            for t in tensors:
                if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes():
                    storage = t.untyped_storage()
                    storages.setdefault(storage.data_ptr(), _bytes_of(storage))
    for raw in storages.values():
        raw.bitwise_xor_(1)
    try:
        yield
    finally:
        for raw in storages.values():
            raw.bitwise_xor_(1)


def _bytes_of(storage: torch.UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


def _in_background(fn: Callable[[], T]) -> T:
    outcome: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as err:  # re-raised on the caller's thread
            errors.append(err)

    thread = threading.Thread(target=target, name="spec-tests-async-save", daemon=True)
    thread.start()
    thread.join(_TIMEOUT_S)
    if thread.is_alive():
        raise ContractViolation(f"the background save did not end within {_TIMEOUT_S:g} s")
    if errors:
        raise errors[0]
    return outcome[0]
