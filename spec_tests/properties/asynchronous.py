"""Spec section 9: ``dcp.async_save``, the save path production training runs.

A backend claiming ``async`` is driven through torch's own ``async_save`` (THREAD mode in
this process, PROCESS mode in a spawned gloo rank whose daemon gets the pickled writer),
staged by async_save's own choice (the writer when it is an ``AsyncStager``) and by
torch's ``DefaultStager`` with shared memory and background staging on and off. The
properties:

- the staged copy is a copy: the state dict changed in place once staging completed
  does not reach the checkpoint;
- done means durable: once ``upload_completion`` resolves, a fresh reader (in another
  process, for PROCESS mode) loads the checkpoint exactly; before, a load is refused or
  exact, never partial;
- a failure in the background write surfaces as the future's exception and commits
  nothing;
- two saves under way at once both complete exactly (or one is refused loudly);
- 50 saves in a row leak no memory, descriptors, threads or shared-memory segments;
- a process killed between staging and upload completion leaves the previous
  checkpoint (or the new one, whole).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st
from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType

from spec_tests import strategies as sts
from spec_tests.backends import Backend, load_backend
from spec_tests.contract.verdicts import ContractViolation, may_refuse
from spec_tests.plugin.profiles import NIGHTLY, few
from spec_tests.properties import _async
from spec_tests.properties._generations import check_generation, generation, killed_itself
from spec_tests.properties.checks import (
    Location,
    assert_nothing_committed,
    check_load,
    draw_tensor,
)
from spec_tests.sim import harness
from spec_tests.sim.ranks import check_ranks, run_ranks, spawn_ranks

__all__ = ["AsyncProperties", "killed_async_save", "process_mode_saves"]

#: Saves of the leak check (nightly; CI runs LEAK_SAVES_CI), and how much each resource may
#: grow over all of them. A save moves 2 MiB, so keeping each staged copy of 50 saves grows
#: RSS by 100 MiB, past the bound; in CI only a leaked descriptor, thread or shm segment
#: per save is sure to be caught.
LEAK_SAVES = 50
LEAK_SAVES_CI = 10
LEAK_BOUNDS = {"rss_bytes": 48 << 20, "fds": 4, "threads": 4, "shm": 4}
#: The leak check's stagers: the writer, and torch's with shared memory and a staging thread.
LEAK_STAGERS = ("own", "default-shm-async")
_LEAK_ELEMENTS = 1 << 19  # float32: 2 MiB a save


def _state(data: st.DataObject, backend: Backend) -> dict[str, torch.Tensor]:
    """1-3 contiguous tensors of claimed dtypes, none empty.

    Empty tensors are left to the round-trip properties: torch's own stagers cannot stage an
    empty float4_e2m1fn_x2 tensor (docs/known-bugs.md), whichever backend saves it.
    """
    count = data.draw(st.integers(1, 3), label="entries")
    shapes = sts.shapes(min_dims=1, max_dims=2).filter(lambda s: 0 not in s)
    return {
        f"t{k}": draw_tensor(data, backend, shape=data.draw(shapes, label="shape")).contiguous()
        for k in range(count)
    }


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.items()}


def _refused_or_exact(backend: Backend, location: str, state: dict[str, Any], why: str) -> None:
    """A load of ``location`` raises or loads ``state`` exactly (never a part of it)."""
    with may_refuse(f"loading {why}") as outcome:
        check_load(backend, location, state)
    if outcome.refused:
        note(f"loading {why} was refused: {outcome.error!r}")


class AsyncProperties:
    """``dcp.async_save`` in THREAD and PROCESS modes, with each kind of stager."""

    @pytest.mark.dcp_requires("async")
    @pytest.mark.parametrize("stager", sorted(_async.STAGERS))
    @few(4)
    @given(data=st.data())
    def test_async_save_holds_values_at_call(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject, stager: str
    ) -> None:
        """The checkpoint holds the values at the call, though they change once staged.

        The state dict is changed in place as soon as staging completes (as a training
        loop's next step does), and only then may the background save plan and write; a
        load meanwhile is refused or exact, and after upload_completion a fresh reader loads
        the values at the call exactly.
        """
        state = _state(data, dcp_backend)
        expected, location = _copy(state), dcp_location()
        gate = threading.Event()
        with harness.repro(dcp_backend, stager=stager, entries=sorted(state)):
            save = _async.start(
                dcp_backend.make_writer(location),
                location,
                state,
                stager,
                planner=_async.GatedPlanner(gate),
            )
            save.staged()
            _async.scribble(state)
            gate.set()
            _refused_or_exact(dcp_backend, location, expected, "before upload_completion")
            save.wait()
            check_load(dcp_backend, location, expected)

    @pytest.mark.dcp_requires("async")
    @pytest.mark.parametrize("stager", ["own", "default-async"])
    @few(4)
    @given(data=st.data())
    def test_async_background_error_reaches_caller(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject, stager: str
    ) -> None:
        """resolve_data failing in the background fails upload_completion with that fault.

        The planner fails one item on the background thread; the future must raise the
        injected fault (not some later symptom), and nothing may be loadable.
        """
        state = _state(data, dcp_backend)
        victim = data.draw(st.sampled_from(sorted(state)), label="failing entry")
        location = dcp_location()
        fault = harness.Fault(lambda item: item.index.fqn == victim)
        planner = harness.SpecSavePlanner(fail_on=fault)
        with (
            harness.repro(dcp_backend, stager=stager, failing=victim),
            harness.threads_surface_errors("an async save whose resolve_data fails"),
        ):
            save = _async.start(
                dcp_backend.make_writer(location), location, state, stager, planner=planner
            )
            with may_refuse("an async save whose resolve_data fails") as outcome:
                save.wait()
            if outcome.error is None:
                raise ContractViolation(
                    f"resolve_data raised for {victim!r} in the background, yet "
                    "upload_completion resolved: the background error never reached the caller"
                )
            if not fault.found_in(outcome.error):
                raise ContractViolation(
                    f"resolve_data raised for {victim!r} in the background, and the save "
                    f"failed, but not with that fault: {type(outcome.error).__name__}: "
                    f"{outcome.error}"
                ) from outcome.error
            assert_nothing_committed(dcp_backend, location, state, "the async save failed")

    @pytest.mark.dcp_requires("async")
    @few(4)
    @given(data=st.data())
    def test_overlapping_async_saves(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """A second async_save started before the first finished: each loads exactly.

        The second saves the next step's values of the same entries (every byte changed),
        as a training loop does. Either may be refused loudly (its future raises), never
        lost silently.
        """
        first = _state(data, dcp_backend)
        second = _copy(first)
        _async.scribble(second)
        states = [first, second]
        expected = [_copy(s) for s in states]
        locations = [dcp_location(), dcp_location()]
        with harness.repro(dcp_backend, entries=[sorted(s) for s in states]):
            # Both saves plan and write only once both have staged and changed their state.
            gate, saves = threading.Event(), []
            for state, location in zip(states, locations, strict=True):
                writer = dcp_backend.make_writer(location)
                planner = _async.GatedPlanner(gate)
                saves.append(_async.start(writer, location, state, "own", planner=planner))
                saves[-1].staged()
                _async.scribble(state)
            gate.set()
            for save, location, values in zip(saves, locations, expected, strict=True):
                with may_refuse("a save overlapping another") as outcome:
                    save.wait()
                if outcome.refused:
                    assert_nothing_committed(dcp_backend, location, values, "it was refused")
                else:
                    check_load(dcp_backend, location, values)

    @pytest.mark.dcp_requires("async")
    @pytest.mark.parametrize("stager", LEAK_STAGERS)
    def test_async_saves_do_not_leak(
        self, dcp_backend: Backend, dcp_location: Location, stager: str
    ) -> None:
        """50 async saves in a row: RSS, descriptors, threads and shm grow within bounds.

        Each save goes to a new location (a training job's rotating checkpoint ids), moves
        2 MiB, and loads exactly (then the backend's optional ``cleanup`` frees it, so an
        in-memory store's checkpoints are not counted). 10 saves outside dcp-nightly. Staged
        by the writer (``own``) and by torch's shared-memory, background ``DefaultStager``,
        whose segments and staging threads are what a save would leak.
        """
        saves = LEAK_SAVES if settings.get_current_profile_name() == NIGHTLY else LEAK_SAVES_CI
        locations = [dcp_location() for _ in range(saves + 2)]
        values = [torch.full((_LEAK_ELEMENTS,), float(i)) for i in range(len(locations))]
        with harness.repro(dcp_backend, saves=saves, stager=stager, bounds=LEAK_BOUNDS):
            before = None
            for i, location in enumerate(locations):
                if i == 2:  # after two warm-up saves: pools and caches made once are made
                    before = _async.snapshot()
                state = {"t": values[i].clone()}
                save = _async.start(dcp_backend.make_writer(location), location, state, stager)
                save.wait()
                del save, state
                check_load(dcp_backend, location, {"t": values[i]})
                # An in-memory store holds each checkpoint in this process: freed once checked,
                # what it kept is not counted as a leak (a real job deletes old checkpoints too).
                if callable(cleanup := getattr(dcp_backend, "cleanup", None)):
                    cleanup(location)
            after = _async.snapshot()
            if before is None or after is None:
                pytest.skip("no /proc: this platform does not tell a process's resources")
            grown = after.grown(before)
            print(f"over {saves} async saves: grown {grown}")  # in the test's output
            over = {k: v for k, v in grown.items() if v > LEAK_BOUNDS[k]}
            if over:
                raise ContractViolation(
                    f"{saves} async saves grew {over}: expected at most "
                    f"{ {k: LEAK_BOUNDS[k] for k in over} } (a leak per save)"
                )

    @pytest.mark.dcp_requires("async", "multiprocess")
    @few(1)
    @given(seed=st.integers(0, 2**16))
    def test_process_mode_async_save(
        self, dcp_backend: Backend, dcp_backend_spec: str, dcp_location: Location, seed: int
    ) -> None:
        """PROCESS mode: the writer pickled into torch's daemon saves what the call held.

        In a spawned gloo rank, async_save(PROCESS) with the writer as stager and with a
        shared-memory background DefaultStager; the rank changes the values once staged,
        then loads each checkpoint exactly, as does this process afterwards.
        """
        if load_backend(dcp_backend_spec).name != dcp_backend.name:
            pytest.skip("the backend under test cannot be rebuilt from its SPEC in a child")
        locations = [dcp_location() for _ in _PROCESS_STAGERS]
        with harness.repro(dcp_backend, spec=dcp_backend_spec, seed=seed):
            run_ranks(process_mode_saves, 1, dcp_backend_spec, locations, seed, timeout=300)
            for i, location in enumerate(locations):
                check_load(dcp_backend, location, _numbered(seed + i))

    @pytest.mark.dcp_requires("async", "atomic-commit")
    @few(1)
    @given(data=st.data())
    def test_killed_async_save_keeps_previous(
        self,
        dcp_backend: Backend,
        dcp_backend_spec: str,
        dcp_location: Location,
        data: st.DataObject,
    ) -> None:
        """A process SIGKILLed between staging and upload completion: old or new, whole."""
        if load_backend(dcp_backend_spec).name != dcp_backend.name:
            pytest.skip("the backend under test cannot be rebuilt from its SPEC in a child")
        delay = data.draw(st.floats(0.0, 0.05).map(lambda s: round(s, 3)), label="kill after s")
        seed = data.draw(st.integers(0, 2**16), label="seed")
        location = dcp_location()
        with harness.repro(dcp_backend, spec=dcp_backend_spec, delay=delay, seed=seed):
            harness.save(dcp_backend, location, [generation(seed, "old")])
            (child,) = spawn_ranks(
                killed_async_save,
                1,
                dcp_backend_spec,
                location,
                delay,
                seed,
                timeout=120,
                group=None,
            )
            note(child.describe())
            if not killed_itself(child):
                check_ranks([child])
            check_generation(dcp_backend, location, seed)


_PROCESS_STAGERS = ("own", "default-shm-async")


def _numbered(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "weights": torch.randn(33, 17, generator=gen),
        "step": torch.randint(0, 2**15, (3,), dtype=torch.int16, generator=gen),
    }


def process_mode_saves(_rank: int, _world: int, spec: str, locations: list[str], seed: int) -> None:
    """Child rank: async_save(PROCESS) to each location, scribble once staged, load back."""
    backend: Any = load_backend(spec)
    for i, (location, stager) in enumerate(zip(locations, _PROCESS_STAGERS, strict=True)):
        state = _numbered(seed + i)
        save = _async.start(
            backend.make_writer(location),
            location,
            state,
            stager,
            mode=AsyncCheckpointerType.PROCESS,
        )
        save.staged()
        _async.scribble(state)
        save.wait()
        # This process never wrote the checkpoint: the daemon did.
        check_load(backend, location, _numbered(seed + i))


def killed_async_save(
    _rank: int, _world: int, spec: str, location: str, delay: float, seed: int
) -> None:
    """Child process: async_save the new generation; SIGKILL itself ``delay`` s after staging."""
    backend: Any = load_backend(spec)
    save = _async.start(backend.make_writer(location), location, generation(seed, "new"), "own")
    save.staged()
    threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    save.wait()
