"""Interleaving operations phase by phase: concurrent saves and loads in a chosen order.

Each actor (a save or a load, named ``"A"``, ``"B"``, ...) runs in its own thread and calls
:meth:`Interleaving.gate` before each backend call (``harness.save``/``load``'s
``before_call``). Calls that begin a phase (``reset``: ``start``; ``write_data``:
``write``; ``finish``: ``finish``; ``read_data``: ``read``) wait until the schedule reaches
that phase of that actor; the schedule moves on when the actor reaches its next phase or
ends. A backend that blocks an actor (a lock held by another actor) cannot deadlock the
schedule: after ``patience_s`` without progress the schedule moves on regardless.

:func:`interleavings` lists every order of two actors' phases, so a property tries them all
in every run.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from spec_tests.contract.verdicts import ContractViolation, Refusal, may_refuse

__all__ = ["PHASES", "Interleaving", "Step", "interleavings", "run_actors"]

PHASES = {"reset": "start", "write_data": "write", "finish": "finish", "read_data": "read"}
"""Backend calls that begin a phase, and the phase's name."""

Step = tuple[str, str]
"""(actor, phase)."""

_RUN_TIMEOUT_S = 120.0


def interleavings(first: Sequence[Step], second: Sequence[Step]) -> Iterator[tuple[Step, ...]]:
    """Every merge of two actors' phase sequences that keeps each one's own order."""
    total = len(first) + len(second)
    for slots in itertools.combinations(range(total), len(first)):
        a, b = iter(first), iter(second)
        yield tuple(next(a) if k in slots else next(b) for k in range(total))


class Interleaving:
    """Grants phases to actors in the order ``steps`` gives (see the module docstring)."""

    def __init__(self, steps: Sequence[Step], *, patience_s: float = 2.0) -> None:
        self._steps = list(steps)
        self._at = 0
        self._patience_s = patience_s
        self._cond = threading.Condition()
        self._ended: set[str] = set()
        self._running: dict[str, int] = {}  # actor -> the step it was granted and runs
        self._moved = time.monotonic()

    def hook(self, actor: str) -> Callable[[str, int], None]:
        """``before_call`` for ``actor``'s harness operation."""

        def before_call(label: str, _rank: int) -> None:
            phase = PHASES.get(label)
            if phase is not None:
                self.gate(actor, phase)

        return before_call

    def gate(self, actor: str, phase: str) -> None:
        """``actor`` is about to begin ``phase``: its previous phase is done; wait for its turn."""
        with self._cond:
            self._leave(actor)
            if (actor, phase) not in self._steps[self._at :]:
                return  # not scheduled: runs freely
            while self._current() != (actor, phase):
                waited = time.monotonic() - self._moved
                if waited >= self._patience_s:  # the actor due is blocked in the backend
                    self._advance()
                    continue
                self._cond.wait(self._patience_s - waited)
            self._running[actor] = self._at

    def end(self, actor: str) -> None:
        """``actor`` ended (returned or raised): its remaining phases are skipped."""
        with self._cond:
            self._leave(actor)
            self._ended.add(actor)
            self._skip_ended()
            self._cond.notify_all()

    def _current(self) -> Step | None:
        self._skip_ended()
        return self._steps[self._at] if self._at < len(self._steps) else None

    def _leave(self, actor: str) -> None:
        if self._running.pop(actor, None) == self._at:
            self._advance()

    def _advance(self) -> None:
        self._at += 1
        self._moved = time.monotonic()
        self._skip_ended()
        self._cond.notify_all()

    def _skip_ended(self) -> None:
        while self._at < len(self._steps) and self._steps[self._at][0] in self._ended:
            self._at += 1
            self._moved = time.monotonic()


@dataclass(slots=True)
class _Outcome:
    refusal: Refusal | None = None
    verdict: BaseException | None = None


def run_actors(
    steps: Sequence[Step], actors: Mapping[str, Callable[[Callable[[str, int], None]], object]]
) -> dict[str, Refusal]:
    """Run each actor (given its ``before_call``) in a thread, phases in the order ``steps``
    gives; return each one's refusal (its own error) or success. A verdict raised in an
    actor is raised here."""
    schedule = Interleaving(steps)
    outcomes = {name: _Outcome() for name in actors}

    def run(name: str) -> None:
        try:
            with may_refuse(f"actor {name} ({', '.join(p for a, p in steps if a == name)})") as r:
                actors[name](schedule.hook(name))
            outcomes[name].refusal = r
        except BaseException as verdict:  # a verdict: carried to the calling thread, raised there
            outcomes[name].verdict = verdict
        finally:
            schedule.end(name)

    threads = [threading.Thread(target=run, args=(name,), name=f"actor-{name}") for name in actors]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + _RUN_TIMEOUT_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            raise ContractViolation(
                f"{thread.name} did not end within {_RUN_TIMEOUT_S:g} s (order {steps}): hangs"
            )
    for outcome in outcomes.values():
        if outcome.verdict is not None:
            raise outcome.verdict
    return {name: o.refusal or Refusal() for name, o in outcomes.items()}
