"""spec_tests.sim.harness.interleave: every order of two actors' phases, run in that order."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import pytest

from spec_tests.contract.verdicts import ContractViolation
from spec_tests.sim.harness.interleave import Step, interleavings, run_actors

_A = [("A", "start"), ("A", "write"), ("A", "finish")]
_B = [("B", "start"), ("B", "write"), ("B", "finish")]


def test_interleavings_are_every_merge_keeping_each_order() -> None:
    orders = list(interleavings(_A, _B))
    assert len(orders) == math.comb(6, 3) == len(set(orders))
    for order in orders:
        assert [s for s in order if s[0] == "A"] == _A
        assert [s for s in order if s[0] == "B"] == _B


def _actor(name: str, log: list[Step]) -> Callable[[Callable[[str, int], None]], None]:
    def run(hook: Callable[[str, int], None]) -> None:
        for label, phase in (("reset", "start"), ("write_data", "write"), ("finish", "finish")):
            hook(label, 0)
            log.append((name, phase))

    return run


@pytest.mark.parametrize("order", list(interleavings(_A, _B))[::4])
def test_actors_run_their_phases_in_the_given_order(order: tuple[Step, ...]) -> None:
    log: list[Step] = []
    outcomes = run_actors(order, {"A": _actor("A", log), "B": _actor("B", log)})
    assert log == list(order)
    assert not any(o.refused for o in outcomes.values())


def test_an_actor_that_raises_is_a_refusal_and_its_phases_are_skipped() -> None:
    log: list[Step] = []

    def failing(hook: Callable[[str, int], None]) -> None:
        hook("reset", 0)
        raise OSError("refused")

    outcomes = run_actors((*_A[:1], *_B, *_A[1:]), {"A": failing, "B": _actor("B", log)})
    assert outcomes["A"].refused
    assert not outcomes["B"].refused
    assert log == _B


def test_a_verdict_in_an_actor_is_raised_in_the_caller() -> None:
    def judged(hook: Callable[[str, int], None]) -> None:
        raise ContractViolation("the backend broke the contract")

    with pytest.raises(ContractViolation, match="broke the contract"):
        run_actors(tuple(_A), {"A": judged})


def test_an_actor_blocked_in_the_backend_does_not_deadlock_the_schedule() -> None:
    released = threading.Event()
    log: list[Step] = []

    def blocked(hook: Callable[[str, int], None]) -> None:
        hook("reset", 0)
        released.wait(30)  # a lock the other actor holds until it ends

    def holder(hook: Callable[[str, int], None]) -> None:
        _actor("B", log)(hook)
        released.set()

    outcomes = run_actors((*_A[:1], *_A[1:], *_B), {"A": blocked, "B": holder})
    assert log == _B
    assert not outcomes["A"].refused
