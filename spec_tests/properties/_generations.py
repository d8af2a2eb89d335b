"""Two generations of one checkpoint, for the properties that kill a save part-way.

A killed save (synchronous, ``faults``; asynchronous, ``asynchronous``) must leave the old
generation or the new one, whole: the two hold different entries, so a mix is told apart.
"""

from __future__ import annotations

import signal

import torch

from spec_tests.backends import Backend
from spec_tests.contract.verdicts import ContractViolation
from spec_tests.properties.checks import check_entry, request_for
from spec_tests.sim import harness
from spec_tests.sim.ranks import RankOutcome

__all__ = ["check_generation", "generation", "killed_itself"]


def generation(seed: int, which: str) -> dict[str, torch.Tensor]:
    """The ``"old"`` or ``"new"`` generation's state dict for ``seed``: a shared entry with other
    values, and one entry only that generation has."""
    gen = torch.Generator().manual_seed(seed + (which == "new"))
    value = torch.randint(0, 256, (64, 257), dtype=torch.uint8, generator=gen)
    return {"t": value, f"only_{which}": value[0].clone()}


def check_generation(backend: Backend, location: str, seed: int) -> None:
    """``location`` holds one generation whole: its entries, and each exactly."""
    reader = backend.make_reader(location)
    harness.call("reset", reader.reset, location)
    entries = set(harness.call("read_metadata", reader.read_metadata).state_dict_metadata)
    for which in ("old", "new"):
        state = generation(seed, which)
        if entries == set(state):
            requests = {k: request_for(v) for k, v in state.items()}
            got = harness.load(backend, location, [requests])[0]
            for fqn, value in state.items():
                check_entry(f"{fqn} (metadata says the {which} save is committed)", got[fqn], value)
            return
    raise ContractViolation(f"after a killed save: entries {sorted(entries)} are neither save's")


def killed_itself(child: RankOutcome) -> bool:
    """Whether the child died by its own SIGKILL, before it could report (not the runner's)."""
    return not child.reported and not child.killed and child.exitcode == -signal.SIGKILL
