"""The suite's verdicts on a backend, and the one place where a backend may refuse.

Every check the suite makes of a backend (protocol, data, metadata, thread hygiene)
raises :class:`ContractViolation`. Properties that allow the backend to refuse an
operation say so with :func:`may_refuse`, which lets the backend's own exceptions
through as a refusal but never a verdict, wherever in an exception chain or group
the verdict hides (a backend that wraps the harness's ContractViolation in its own
error has still been caught breaking the contract).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "ContractViolation",
    "Refusal",
    "chain",
    "may_refuse",
    "text_of",
]


class ContractViolation(AssertionError):
    """The backend broke DCP's storage contract: a verdict, never an allowed refusal."""


@dataclass(slots=True)
class Refusal:
    """What :func:`may_refuse` caught: the backend's exception, or None if it did not refuse."""

    error: BaseException | None = None

    @property
    def refused(self) -> bool:
        """Whether the guarded block raised (and so the backend refused)."""
        return self.error is not None


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception reachable from it, each once.

    Follows ``__cause__``, ``__context__``, exception-group members and the per-rank
    ``failures`` mapping of torch's ``CheckpointException`` (which records the ranks'
    exceptions without chaining them).
    """
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack += [e for e in (current.__cause__, current.__context__) if e is not None]
        if isinstance(current, BaseExceptionGroup):
            stack += list(current.exceptions)
        failures = getattr(current, "failures", None)
        if isinstance(failures, dict):
            # torch records each rank's failure as an (exception, traceback) pair.
            firsts = [f[0] if isinstance(f, tuple) and f else f for f in failures.values()]
            stack += [e for e in firsts if isinstance(e, BaseException)]


def text_of(exc: BaseException) -> str:
    """Every exception's type, message and notes along :func:`chain`, one per line."""
    lines = []
    for item in chain(exc):
        lines.append(f"{type(item).__module__}.{type(item).__qualname__}: {item}")
        lines += [str(note) for note in getattr(item, "__notes__", ())]
    return "\n".join(lines)


@contextlib.contextmanager
def may_refuse(what: str) -> Iterator[Refusal]:
    """Allow the backend to refuse ``what`` by raising; re-raise every verdict.

    ``with may_refuse("saving a reserved name") as outcome: ...``, then
    ``outcome.refused`` tells whether it did. A :class:`ContractViolation` anywhere in
    the raised exception's chain is re-raised untouched: the harness's judgement of the
    backend is never mistaken for the backend's refusal.
    """
    outcome = Refusal()
    try:
        yield outcome
    except Exception as exc:
        if type(exc).__module__.startswith("hypothesis"):
            raise  # hypothesis' own control flow (an unsatisfied assume, a frozen draw)
        if any(isinstance(e, ContractViolation) for e in chain(exc)):
            exc.add_note(f"(a contract violation while {what}: not an allowed refusal)")
            raise
        outcome.error = exc
