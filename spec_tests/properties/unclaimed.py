"""Spec section 7: what a backend does not claim, it refuses loudly, never silently wrong.

For each data capability a backend does not claim (each ``dtype:*``, ``bytes``,
``multi-chunk``, ``multi-rank``, ``reshard``) a property attempts it anyway. It passes
only if the attempt round-trips exactly or raises; a refused save must also leave nothing
loadable. Where it may raise depends on the side the capability lives on: a save-side
capability (every ``dtype:*``, ``bytes``, ``multi-chunk``, ``multi-rank``) must be refused
by the save. A save that succeeds committed a checkpoint, and a load of it that fails is
"committed but unloadable": the data was lost at save time, when the training state that
could have been saved again still existed. Only a load-side capability (:data:`LOAD_SIDE`:
``reshard``) may be refused by the load. One property per capability family, so a loud
refusal of one cannot hide a silent loss in another, and every unclaimed dtype is
tried in every example, so a refusing dtype cannot shadow a silently wrong one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import event, given, note
from hypothesis import strategies as st

from dcp_impl.dtypes import DTYPES
from dcp_impl.layout import Box
from spec_tests import strategies as sts
from spec_tests.backends import Backend, claims
from spec_tests.contract.verdicts import ContractViolation, may_refuse
from spec_tests.properties.checks import (
    Location,
    assert_nothing_committed,
    check_entry,
    check_load,
    draw_tensor,
    flat,
    kinds_for,
    request_for,
)
from spec_tests.sim import harness

__all__ = ["LOAD_SIDE", "Attempt", "UnclaimedProperties", "record_refusal"]

#: Capabilities a backend may refuse at load time (the others are decided when saving).
LOAD_SIDE = frozenset({"reshard"})

Record = Callable[[str, object], None]

_MULTI_RANK_KINDS = sts.kinds_needing("multi-rank")
_MULTI_CHUNK_KINDS = sts.kinds_needing("multi-chunk")


def record_refusal(record_property: Record, capability: str) -> None:
    """Mark the running test as one where an unclaimed capability was refused loudly.

    The matrix shows such a passing test as ``refuses`` rather than ``pass``.
    """
    record_property("dcp_outcome", "refuses")
    record_property("dcp_refused", capability)


def _skip_if_claimed(backend: Backend, capability: str) -> None:
    if claims(backend, capability):
        pytest.skip(f"backend {backend.name!r} claims {capability!r}: the other properties test it")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of an unclaimed capability, carrying its own expected answer.

    ``states[r]`` is what save rank ``r`` holds; ``values`` the saved entries whole (by
    flattened name); ``loads[r]`` maps an entry to the boxes load rank ``r`` asks for (None:
    all of it). ``companion`` holds claimed entries that rank 0 saves beside them: a backend
    may refuse what it does not claim, but a save it lets succeed must not take claimed data
    down with it.
    """

    capability: str
    states: tuple[Mapping[str, Any], ...]
    values: Mapping[str, Any]
    loads: tuple[Mapping[str, Sequence[Box] | None], ...]
    companion: Mapping[str, torch.Tensor]

    def run(self, backend: Backend, location: str) -> bool:
        """True if the backend refused loudly; ContractViolation if it was silently wrong or
        committed what it cannot load (a save-side capability refused only at load)."""
        first, *rest = self.states
        with may_refuse(f"saving with unclaimed {self.capability!r}") as saved:
            harness.save(backend, location, [{**first, **self.companion}, *rest])
        if saved.error is not None:
            note(f"the save refused {self.capability!r}: {_brief(saved.error)}")
            everything = {**self.values, **self.companion}
            assert_nothing_committed(backend, location, everything, "the save refused")
            return True
        self._check_companion(backend, location)
        requests = [
            {k: request_for(self.values[k], boxes) for k, boxes in rank.items()}
            for rank in self.loads
        ]
        with may_refuse(f"loading with unclaimed {self.capability!r}") as loaded:
            got = harness.load(backend, location, requests)
        if loaded.error is not None:
            if self.capability not in LOAD_SIDE:
                raise ContractViolation(
                    f"backend {backend.name!r} does not claim {self.capability!r} and let the "
                    f"save succeed, so it committed a checkpoint; expected it to load back "
                    f"exactly, got {_brief(loaded.error)}: committed but unloadable (the data "
                    "was lost at save time, and the user learns it only at load)"
                ) from loaded.error
            note(f"the load refused {self.capability!r}: {_brief(loaded.error)}")
            return True
        try:
            for rank, wanted in enumerate(self.loads):
                for fqn, boxes in wanted.items():
                    value = self.values[fqn]
                    check_entry(f"{fqn!r} on load rank {rank}", got[rank][fqn], value, boxes)
        except ContractViolation as exc:
            raise ContractViolation(
                f"backend {backend.name!r} does not claim {self.capability!r}, so it must "
                f"round-trip exactly or raise; it was silently wrong: {exc}"
            ) from exc
        return False

    def _check_companion(self, backend: Backend, location: str) -> None:
        try:
            check_load(backend, location, self.companion)
        except Exception as exc:
            raise ContractViolation(
                f"a save with unclaimed {self.capability!r} succeeded, but the claimed entries "
                f"saved beside it ({sorted(self.companion)}) do not load back exactly: "
                f"{_brief(exc)}"
            ) from exc


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _sharded(value: torch.Tensor, layout: sts.SaveLayout) -> list[dict[str, Any]]:
    """One state per save rank holding what ``layout`` gives it of ``value`` (as entry "t")."""
    return [{} if held is None else {"t": held} for held in harness.shard(value, layout.boxes)]


_OBJECTS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.binary(max_size=16),
)


def _companion(data: st.DataObject, backend: Backend) -> dict[str, torch.Tensor]:
    return {"companion": draw_tensor(data, backend, max_dims=2)}


def _try(
    backend: Backend, location: str, attempt: Attempt, record_property: Record, **fields: object
) -> None:
    with harness.repro(backend, capability=attempt.capability, **fields):
        try:
            refused = attempt.run(backend, location)
        except ContractViolation as exc:
            exc.add_note(
                f"while trying unclaimed capability {attempt.capability!r}: a backend must "
                "round-trip what it does not claim exactly, or raise"
            )
            raise
        if refused:
            event(f"refused {attempt.capability}")
            record_refusal(record_property, attempt.capability)


def _sharded_attempt(
    capability: str,
    value: torch.Tensor,
    layout: sts.SaveLayout,
    loads: Sequence[Sequence[Box]],
    companion: Mapping[str, torch.Tensor],
) -> Attempt:
    states = tuple(_sharded(value, layout))
    wanted = tuple({"t": list(boxes)} if boxes else {} for boxes in loads)
    return Attempt(capability, states, {"t": value}, wanted, companion)


class UnclaimedProperties:
    """Unclaimed data capabilities, attempted anyway: exact or loud, never silently wrong."""

    @given(data=st.data())
    def test_unclaimed_dtypes_refuse_loudly(
        self,
        dcp_backend: Backend,
        dcp_location: Location,
        data: st.DataObject,
        record_property: Record,
    ) -> None:
        """Every dtype the backend does not claim round-trips exactly or raises."""
        rows = [row for row in DTYPES if not claims(dcp_backend, f"dtype:{row.name}")]
        if not rows:
            pytest.skip(f"backend {dcp_backend.name!r} claims every dtype")
        shape = data.draw(sts.shapes(max_dims=2, max_side=4), label="shape")
        companion = _companion(data, dcp_backend)
        for row in rows:
            value = data.draw(sts.tensor_values(row, shape), label=f"{row.name} values")
            state = {"t": value}
            attempt = Attempt(f"dtype:{row.name}", (state,), state, ({"t": None},), companion)
            _try(dcp_backend, dcp_location(), attempt, record_property, shape=shape)

    @given(data=st.data())
    def test_unclaimed_bytes_refuse_loudly(
        self,
        dcp_backend: Backend,
        dcp_location: Location,
        data: st.DataObject,
        record_property: Record,
    ) -> None:
        """Without ``bytes``: non-tensor entries beside tensors round-trip exactly or raise."""
        _skip_if_claimed(dcp_backend, "bytes")
        objects: dict[str, Any] = data.draw(
            st.dictionaries(sts.names(max_size=6), _OBJECTS, min_size=1, max_size=3),
            label="objects",
        )
        objects["extra object"] = {"step": 3, "tag": "x"}
        entries = flat(objects)
        companion = _companion(data, dcp_backend)
        attempt = Attempt("bytes", (objects,), entries, (dict.fromkeys(entries),), companion)
        _try(dcp_backend, dcp_location(), attempt, record_property, objects=objects)

    @given(data=st.data())
    def test_unclaimed_multi_chunk_refuses_loudly(
        self,
        dcp_backend: Backend,
        dcp_location: Location,
        data: st.DataObject,
        record_property: Record,
    ) -> None:
        """Without ``multi-chunk``: several chunks of a tensor on one rank load exactly or raise."""
        _skip_if_claimed(dcp_backend, "multi-chunk")
        value = draw_tensor(data, dcp_backend, min_dims=1)
        layout = data.draw(
            sts.layouts(value.shape, ranks=1, kinds=_MULTI_CHUNK_KINDS), label="layout"
        )
        companion = _companion(data, dcp_backend)
        attempt = _sharded_attempt("multi-chunk", value, layout, layout.boxes, companion)
        _try(dcp_backend, dcp_location(), attempt, record_property, layout=layout)

    @given(data=st.data())
    def test_unclaimed_multi_rank_refuses_loudly(
        self,
        dcp_backend: Backend,
        dcp_location: Location,
        data: st.DataObject,
        record_property: Record,
    ) -> None:
        """Without ``multi-rank``: a save by several ranks loads back exactly or raises."""
        _skip_if_claimed(dcp_backend, "multi-rank")
        value = draw_tensor(data, dcp_backend, min_dims=1)
        ranks = data.draw(st.integers(2, 4), label="ranks")
        layout = data.draw(
            sts.layouts(value.shape, ranks=ranks, kinds=_MULTI_RANK_KINDS), label="layout"
        )
        companion = _companion(data, dcp_backend)
        attempt = _sharded_attempt("multi-rank", value, layout, layout.boxes, companion)
        _try(dcp_backend, dcp_location(), attempt, record_property, layout=layout)

    @given(data=st.data())
    def test_unclaimed_reshard_refuses_loudly(
        self,
        dcp_backend: Backend,
        dcp_location: Location,
        data: st.DataObject,
        record_property: Record,
    ) -> None:
        """Without ``reshard``: loading other boxes than were saved is exact or raises."""
        _skip_if_claimed(dcp_backend, "reshard")
        value = draw_tensor(data, dcp_backend, min_dims=1)
        save_ranks = data.draw(
            st.integers(1, 3 if claims(dcp_backend, "multi-rank") else 1), label="save ranks"
        )
        case = data.draw(
            sts.reshard_cases(
                value.shape,
                save_ranks=save_ranks,
                load_ranks=data.draw(st.integers(1, 3), label="load ranks"),
                save_kinds=kinds_for(dcp_backend),
            ),
            label="case",
        )
        companion = _companion(data, dcp_backend)
        attempt = _sharded_attempt("reshard", value, case.save, case.load_boxes, companion)
        _try(dcp_backend, dcp_location(), attempt, record_property, case=case)
