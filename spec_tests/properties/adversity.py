"""Spec section 10: adversity. Two saves to one location, and a load during a save.

Each property runs its actors (saves and loads, each through the harness in its own thread)
phase by phase in every order two actors' phases can take
(:mod:`spec_tests.sim.harness.interleave`):
both saves write their data before either commits, one commits while the other writes, a
load reads the metadata before a save commits and the data after, and so on. Every order is
tried in every run; the states are small, with several entries (and, where the backend
claims ``bytes``, an entry of a different length per save, which shifts every offset after
it), so that a checkpoint mixing two saves never passes for either.

- Two savers: whatever both saves report, the location afterwards loads exactly as one save
  that reported success, or as the previous checkpoint when both failed. Both reporting
  success while nothing, or a mix, loads is a :class:`ContractViolation`.
- A load during a save returns exactly the old checkpoint or exactly the new one, or raises;
  afterwards the location loads as the new one (the old one if the save failed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch

from spec_tests.backends import Backend, claims
from spec_tests.contract.verdicts import ContractViolation, Refusal, may_refuse
from spec_tests.properties.checks import Location, flat, request_for
from spec_tests.sim import harness
from spec_tests.sim.harness.interleave import Step, interleavings, run_actors

__all__ = ["AdversityProperties", "LOAD_DURING_SAVE", "TWO_SAVERS", "version"]

_SAVE_PHASES = ("start", "write", "finish")
TWO_SAVERS: tuple[tuple[Step, ...], ...] = tuple(
    interleavings([("A", p) for p in _SAVE_PHASES], [("B", p) for p in _SAVE_PHASES])
)
"""Every order of two saves' phases (20)."""
LOAD_DURING_SAVE: tuple[tuple[Step, ...], ...] = tuple(
    interleavings([("R", "start"), ("R", "read")], [("W", p) for p in _SAVE_PHASES])
)
"""Every order of a load's phases and a save's (10)."""
_ENTRIES = 4


def _order_id(order: tuple[Step, ...]) -> str:
    return "-".join(f"{actor}{phase[0]}" for actor, phase in order)


def version(k: int, *, with_bytes: bool) -> dict[str, Any]:
    """Save number ``k``'s state: every entry differs from every other save's."""
    state: dict[str, Any] = {
        f"w{i}": torch.full((8 + i,), float(100 * k + i), dtype=torch.float32)
        for i in range(_ENTRIES)
    }
    if with_bytes:
        state["tag"] = f"save {k} " + "x" * (37 * k)
    return state


def _which(loaded: Mapping[str, Any], versions: Mapping[str, dict[str, Any]]) -> str | None:
    """The name of the version ``loaded`` is exactly, or None (a mix, or other data)."""
    for name, state in versions.items():
        if all(_same(loaded[fqn], value) for fqn, value in flat(state).items()):
            return name
    return None


def _same(loaded: Any, value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return len(loaded) == 1 and bool(torch.equal(loaded[0], value))
    return type(loaded) is type(value) and bool(loaded == value)


def _describe(loaded: Mapping[str, Any], versions: Mapping[str, dict[str, Any]]) -> str:
    parts = []
    for fqn in loaded:
        owners = [n for n, s in versions.items() if _same(loaded[fqn], flat(s)[fqn])]
        parts.append(f"{fqn} from {owners[0] if owners else 'no save'}")
    return ", ".join(parts)


def _load_all(backend: Backend, location: str, state: Mapping[str, Any]) -> Any:
    requests = {fqn: request_for(value) for fqn, value in flat(state).items()}

    def load(hook: Callable[[str, int], None]) -> dict[str, Any]:
        return harness.load(backend, location, [requests], before_call=hook)[0]

    return load


def _reports(outcomes: Mapping[str, Refusal]) -> str:
    return "; ".join(
        f"{name} {'raised ' + repr(r.error)[:200] if r.refused else 'succeeded'}"
        for name, r in outcomes.items()
    )


def _check_loads_as(
    backend: Backend,
    location: str,
    versions: Mapping[str, dict[str, Any]],
    allowed: list[str],
    context: str,
) -> None:
    """Raise ContractViolation unless ``location`` loads exactly as one of ``allowed``."""
    with may_refuse(f"loading after {context}") as refusal:
        loaded = _load_all(backend, location, versions[allowed[0]])(lambda *_: None)
    if refusal.error is not None:
        raise ContractViolation(
            f"{context}; afterwards the location does not load (expected {' or '.join(allowed)}):"
            f" {refusal.error!r}"
        ) from refusal.error
    got = _which(loaded, {name: versions[name] for name in versions})
    if got not in allowed:
        found = got or f"a mix ({_describe(loaded, versions)})"
        raise ContractViolation(
            f"{context}; afterwards the location loads {found}: expected {' or '.join(allowed)}"
        )


class AdversityProperties:
    """Concurrent saves and loads on one location."""

    @pytest.mark.parametrize("over", ["over-previous", "fresh"])
    @pytest.mark.parametrize("order", TWO_SAVERS, ids=_order_id)
    def test_two_concurrent_savers(
        self, dcp_backend: Backend, dcp_location: Location, order: tuple[Step, ...], over: str
    ) -> None:
        """Two saves to one location leave exactly one save (or the previous checkpoint)."""
        location = dcp_location()
        with_bytes = claims(dcp_backend, "bytes")
        versions = {name: version(k, with_bytes=with_bytes) for k, name in enumerate("PAB")}
        if over == "over-previous":
            harness.save(dcp_backend, location, [versions["P"]])

        def saver(name: str) -> Callable[[Callable[[str, int], None]], object]:
            return lambda hook: harness.save(
                dcp_backend, location, [versions[name]], before_call=hook
            )

        outcomes = run_actors(order, {"A": saver("A"), "B": saver("B")})
        allowed = [name for name in "AB" if not outcomes[name].refused]
        if not allowed and over == "fresh":
            return  # nothing was committed before, and nothing reported success
        context = f"two saves in order {_order_id(order)} ({over}): {_reports(outcomes)}"
        _check_loads_as(dcp_backend, location, versions, allowed or ["P"], context)

    @pytest.mark.parametrize("order", LOAD_DURING_SAVE, ids=_order_id)
    def test_load_during_save(
        self, dcp_backend: Backend, dcp_location: Location, order: tuple[Step, ...]
    ) -> None:
        """A load while a save replaces the checkpoint returns the old or the new, or raises."""
        location = dcp_location()
        with_bytes = claims(dcp_backend, "bytes")
        versions = {
            "old": version(0, with_bytes=with_bytes),
            "new": version(1, with_bytes=with_bytes),
        }
        harness.save(dcp_backend, location, [versions["old"]])
        loaded: list[Any] = []

        def save(hook: Callable[[str, int], None]) -> object:
            return harness.save(dcp_backend, location, [versions["new"]], before_call=hook)

        def load(hook: Callable[[str, int], None]) -> None:
            loaded.append(_load_all(dcp_backend, location, versions["old"])(hook))

        outcomes = run_actors(order, {"W": save, "R": load})
        context = f"a load during a save in order {_order_id(order)}: {_reports(outcomes)}"
        if loaded and _which(loaded[0], versions) is None:
            raise ContractViolation(
                f"{context}; the load returned a mix ({_describe(loaded[0], versions)}): "
                "expected exactly the old checkpoint or the new one, or an error"
            )
        after = "old" if outcomes["W"].refused else "new"
        _check_loads_as(dcp_backend, location, versions, [after], context)
