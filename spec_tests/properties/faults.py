"""Spec section 5: failures are reported, never turned into wrong data or a broken checkpoint."""

from __future__ import annotations

import os
import random
import signal
import threading
from typing import Any

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from dcp_impl.layout import Box
from spec_tests import strategies as sts
from spec_tests.backends import Backend, claims
from spec_tests.contract.verdicts import ContractViolation, may_refuse
from spec_tests.plugin.profiles import few
from spec_tests.properties import _pieces
from spec_tests.properties._generations import check_generation, generation, killed_itself
from spec_tests.properties.checks import (
    Location,
    assert_nothing_committed,
    check_entry,
    draw_tensor,
    request_for,
    sharded_save,
)
from spec_tests.sim import harness, shardings
from spec_tests.sim.harness.damage import damage
from spec_tests.sim.ranks import check_ranks, spawn_ranks

__all__ = ["FaultProperties"]


def _load_raises_or_exact(backend: Backend, location: str, value: torch.Tensor) -> None:
    with may_refuse("loading damaged data") as outcome:
        got = harness.load(backend, location, [{"t": request_for(value)}])[0]
    if outcome.error is not None:
        note(f"load raised {type(outcome.error).__name__}: {outcome.error}")
        return
    check_entry("t (after damage: must raise or be exact)", got["t"], value)


def _load_box_raises_or_exact(
    backend: Backend, location: str, value: torch.Tensor, box: Box
) -> None:
    with may_refuse("loading damaged data") as outcome:
        got = harness.load(backend, location, [{"t": request_for(value, [box])}])[0]
    if outcome.error is not None:
        note(f"load of {box} raised {type(outcome.error).__name__}: {outcome.error}")
        return
    check_entry("t (after damage: must raise or be exact)", got["t"], value, [box])


def _damage(backend: Backend, location: str, how: str, rng: random.Random) -> None:
    done = damage(backend, location, how, rng)
    if done is None:
        pytest.skip(f"backend {backend.name!r} has no data files and no {how}(path, rng) hook")
    note(done)


class FaultProperties:
    """Injected failures, damaged files, killed saves."""

    @given(data=st.data())
    def test_failing_item_fails_save(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """resolve_data raising for one item makes the save raise and commit nothing.

        Only the injected fault counts as the save failing: it must come out of the backend's
        calls (in the raised exception's chain, message or notes). A save that loses the fault
        and is then caught by the harness (a missing WriteResult) is a contract violation.
        """
        keys = data.draw(st.lists(sts.names(), min_size=1, max_size=3, unique=True), label="keys")
        state = {k: draw_tensor(data, dcp_backend, max_dims=2) for k in keys}
        victim = data.draw(st.sampled_from(keys), label="failing entry")
        location = dcp_location()
        fault = harness.Fault(lambda item: item.index.fqn == victim)
        with harness.repro(dcp_backend, keys=keys, failing=victim):
            with may_refuse("a save whose resolve_data fails") as outcome:
                harness.save(dcp_backend, location, [state], fail_on=fault)
            if outcome.error is None:
                raise ContractViolation(
                    f"resolve_data raised for {victim!r} but the save succeeded"
                )
            if not fault.found_in(outcome.error):
                raise ContractViolation(
                    f"resolve_data raised for {victim!r} and the save failed, but not with that "
                    f"fault: {type(outcome.error).__name__}: {outcome.error}"
                ) from outcome.error
            assert_nothing_committed(dcp_backend, location, state, "the save failed")

    @pytest.mark.dcp_requires("integrity")
    @given(data=st.data(), seed=st.integers(0, 2**32 - 1))
    def test_corrupted_data_detected(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject, seed: int
    ) -> None:
        """A flipped bit in stored data raises on load (or leaves every value exact)."""
        self._damaged(dcp_backend, dcp_location, data, "corrupt", seed)

    @pytest.mark.dcp_requires("integrity")
    @given(data=st.data(), seed=st.integers(0, 2**32 - 1))
    def test_truncated_data_detected(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject, seed: int
    ) -> None:
        """Truncated stored data raises on load (or leaves every value exact)."""
        self._damaged(dcp_backend, dcp_location, data, "truncate", seed)

    @pytest.mark.dcp_requires("integrity")
    @given(data=st.data(), seed=st.integers(0, 2**32 - 1))
    def test_corruption_detected_in_any_destination(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject, seed: int
    ) -> None:
        """A flipped bit raises on a load into strided destinations, and of a sub-box where
        resharding is claimed (or every loaded value is exact).

        Those loads take other read paths than a whole item into a plain tensor (mapped or
        staged bytes, copies out of them): a check made on one path only lets the others
        serve damaged bytes.
        """
        value = draw_tensor(data, dcp_backend, shape=(64, 64))
        location = dcp_location()
        with harness.repro(dcp_backend, dtype=value.dtype, damage="corrupt", seed=seed):
            harness.save(dcp_backend, location, [{"t": value}])
            _damage(dcp_backend, location, "corrupt", random.Random(seed))
            boxes = [Box.full((64, 64))]
            if claims(dcp_backend, "reshard"):
                boxes.append(Box((data.draw(st.integers(0, 63), label="row"), 0), (1, 64)))
            for box in boxes:
                with may_refuse("loading damaged data") as outcome:
                    request = request_for(value, [box], strided=True)
                    got = harness.load(dcp_backend, location, [{"t": request}])[0]
                if outcome.error is None:
                    check_entry("t (after damage: must raise or be exact)", got["t"], value, [box])

    @pytest.mark.dcp_requires("integrity", "reshard")
    @few(10)
    @given(data=st.data())
    def test_damage_inside_a_sub_box_fails_it(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """A flipped bit in the stored bytes of an element a sub-box read returns makes the
        read raise (or return every value exact): at the box's first element, its last, and
        one between, in a 4 MiB chunk.

        A reader that checks only some of the pieces a read spans (the one it starts in,
        say) passes whole reads and small chunks, but serves damage in the others.
        """
        value = _pieces.unique_values(data, dcp_backend)
        box = _pieces.row_box(data, max_rows=256)
        (row, col), (rows, cols) = box.offsets, box.sizes
        between = (
            data.draw(st.integers(row, row + rows - 1), label="damaged row"),
            data.draw(st.integers(col, col + cols - 1), label="damaged column"),
        )
        bit = data.draw(st.integers(0, 63), label="bit")
        location = dcp_location()
        with harness.repro(dcp_backend, dtype=value.dtype, box=box, bit=bit):
            harness.save(dcp_backend, location, [{"t": value}])
            for at in ((row, col), between, (row + rows - 1, col + cols - 1)):
                with _pieces.flipped(location, value, *at, bit):
                    _load_box_raises_or_exact(dcp_backend, location, value, box)

    @pytest.mark.dcp_requires("integrity", "integrity-pieces", "reshard")
    @few(10)
    @given(data=st.data())
    def test_damage_outside_a_sub_box_spares_it(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """A flipped bit more than ``PIECE_REACH`` (1 MiB) from every byte a sub-box read
        returns does not fail the read: it loads exactly; a read of the damaged element
        itself still raises (or is exact).

        Checksums over whole chunks fail this (a column of a large chunk needs all of it):
        the ``integrity-pieces`` capability claims it.
        """
        value = _pieces.unique_values(data, dcp_backend)
        box = _pieces.row_box(data, max_rows=64)
        row = data.draw(st.sampled_from(_pieces.far_rows(box)), label="damaged row")
        col = data.draw(st.integers(0, _pieces.COLS - 1), label="damaged column")
        bit = data.draw(st.integers(0, 63), label="bit")
        location = dcp_location()
        with harness.repro(dcp_backend, dtype=value.dtype, box=box, damaged=(row, col), bit=bit):
            harness.save(dcp_backend, location, [{"t": value}])
            with _pieces.flipped(location, value, row, col, bit):
                with may_refuse("loading a sub-box away from damaged data") as outcome:
                    got = harness.load(dcp_backend, location, [{"t": request_for(value, [box])}])
                if outcome.error is not None:
                    raise ContractViolation(
                        f"damage at element [{row}, {col}], more than {_pieces.PIECE_REACH} "
                        f"bytes from every byte of box {box}, failed its read: "
                        f"{type(outcome.error).__name__}: {outcome.error}"
                    ) from outcome.error
                check_entry("t (damage elsewhere)", got[0]["t"], value, [box])
                _load_box_raises_or_exact(dcp_backend, location, value, Box((row, col), (1, 1)))

    def _damaged(
        self, backend: Backend, dcp_location: Location, data: st.DataObject, how: str, seed: int
    ) -> None:
        # Big enough that the payload, not the file framing, takes most of the bytes.
        value = draw_tensor(data, backend, shape=(64, 64))
        location = dcp_location()
        with harness.repro(backend, dtype=value.dtype, shape=tuple(value.shape), damage=how):
            harness.save(backend, location, [{"t": value}])
            _damage(backend, location, how, random.Random(seed))
            _load_raises_or_exact(backend, location, value)

    @pytest.mark.dcp_requires("overwrite")
    @given(data=st.data())
    def test_stale_files_never_read(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """A save over 4 ranks, then one over 2 (or 1): only the second's data is loaded.

        The second save's chunks reuse some of the first's offsets, so a reader
        that trusts every file it finds mixes old rows into the new tensor.
        """
        multi = claims(dcp_backend, "multi-rank")
        # At least 4 rows, so that every shard of the 4-rank save holds one (a stale file
        # holding no row would let a reader that reads it pass).
        length = data.draw(st.integers(4 if multi else 1, 8), label="rows")
        rest = data.draw(sts.shapes(max_dims=2).filter(lambda s: 0 not in s), label="other dims")
        old = draw_tensor(data, dcp_backend, shape=(length, *rest))
        new = data.draw(sts.tensor_values(old.dtype, tuple(old.shape)), label="new values")
        location = dcp_location()
        with harness.repro(dcp_backend, dtype=old.dtype, shape=tuple(old.shape)):
            for value, ranks in ((old, 4 if multi else 1), (new, 2 if multi else 1)):
                rows = shardings.row_shards(value.shape, ranks)
                layout = sts.SaveLayout(tuple(value.shape), tuple(map(tuple, rows)), "rows")
                sharded_save(dcp_backend, location, "t", value, layout)
            got = harness.load(dcp_backend, location, [{"t": request_for(new)}])[0]
            check_entry("t", got["t"], new)

    @given(data=st.data())
    def test_failed_load_keeps_data(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """A load that fails (resolve_tensor raises) deletes nothing: a retry loads exactly."""
        value = draw_tensor(data, dcp_backend, min_dims=1)
        location = dcp_location()
        with harness.repro(dcp_backend, dtype=value.dtype, shape=tuple(value.shape)):
            harness.save(dcp_backend, location, [{"t": value}])
            with may_refuse("a load whose resolve_tensor fails"):
                harness.load(
                    dcp_backend, location, [{"t": request_for(value)}], fail_on=lambda i: True
                )
            got = harness.load(dcp_backend, location, [{"t": request_for(value)}])[0]
            check_entry("t", got["t"], value)

    @pytest.mark.dcp_requires("atomic-commit")
    @few(8)
    @given(data=st.data())
    def test_killed_save_keeps_previous(
        self,
        dcp_backend: Backend,
        dcp_backend_spec: str,
        dcp_location: Location,
        data: st.DataObject,
    ) -> None:
        """A save SIGKILLed at a random call or moment leaves the old checkpoint or the new one.

        The two saves hold different entries, so a mix (old metadata over new
        data, or the reverse) is told apart from either.
        """
        kill = data.draw(
            st.one_of(st.integers(0, 7), st.floats(0.0, 0.3).map(lambda s: round(s, 3))),
            label="kill before backend call # (int) or after seconds (float)",
        )
        seed = data.draw(st.integers(0, 2**16), label="seed")
        location = dcp_location()
        with harness.repro(dcp_backend, spec=dcp_backend_spec, kill=kill, seed=seed):
            harness.save(dcp_backend, location, [generation(seed, "old")])
            (child,) = spawn_ranks(
                killed_save, 1, dcp_backend_spec, location, kill, seed, timeout=120, group=None
            )
            note(child.describe())
            if not killed_itself(child):
                check_ranks([child])  # it raised, or ended some other way before reporting
            check_generation(dcp_backend, location, seed)


def killed_save(
    _rank: int, _world: int, spec: str, location: str, kill: int | float, seed: int
) -> None:
    """Child process: save the new generation; SIGKILL itself at call ``kill`` (an int) or
    after ``kill`` seconds (a float)."""
    from spec_tests.backends import load_backend

    calls = 0

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def maybe_die(_label: str, _rank: int) -> None:
        nonlocal calls
        if calls == kill:
            die()
        calls += 1

    if isinstance(kill, float):
        threading.Timer(kill, die).start()
    backend: Any = load_backend(spec)
    harness.save(backend, location, [generation(seed, "new")], before_call=maybe_die)
