"""Non-tensor entries that are legitimate but not ``weights_only``-safe, by name.

Checkpoints hold more than tensors and plain containers: a training script's own dataclass,
its ``argparse.Namespace``, a ``datetime``, an enum member, a ``Fraction``. Unpickling each
needs a global that ``torch.load(weights_only=True)`` does not allow, so a reader that claims
``safe-load`` refuses them by default. They are not hostile, though: a reader that trusts the
checkpoint must give back exactly the object saved, and one that does not trust it must raise,
never hand back a stand-in (``None``, a dict of the fields, the pickled arguments).

The classes live in this importable module, as a user's would in theirs, so a child process
can unpickle them too.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import fractions
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["USER_OBJECTS", "Phase", "TrainingProgress"]


@dataclass(frozen=True)
class TrainingProgress:
    """A user's record of where training stands (what a trainer puts in its state dict)."""

    step: int
    epoch: int
    tag: str
    losses: tuple[float, ...] = ()


class Phase(enum.Enum):
    """A user's enum (a learning-rate schedule's phase)."""

    WARMUP = "warmup"
    DECAY = "decay"


#: Name -> a fresh legitimate object that ``torch.load(weights_only=True)`` refuses.
USER_OBJECTS: dict[str, Callable[[], object]] = {
    "dataclass": lambda: TrainingProgress(41_000, 3, "run-\u00e9t\u00e9", (2.5, 0.125, -0.0)),
    "dataclass in a list": lambda: [TrainingProgress(7, 0, ""), 7, "seven"],
    "argparse.Namespace": lambda: argparse.Namespace(lr=3e-4, layers=12, name="gpt", tied=True),
    "datetime": lambda: datetime.datetime(2026, 12, 7, 4, 30, 15, 123456),
    "enum": lambda: Phase.DECAY,
    "fraction": lambda: fractions.Fraction(1, 3),
}
