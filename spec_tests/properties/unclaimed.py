"""Spec section 7: what a backend does not claim, it refuses loudly, never silently wrong.

For each data capability a backend does not claim (each ``dtype:*``, ``bytes``,
``multi-chunk``, ``multi-rank``, ``reshard``) a property attempts it anyway. It passes
only if the attempt round-trips exactly or raises, at save or at load; a refused save
must also leave nothing loadable. One property per capability family, so a loud
refusal of one cannot hide a silent loss in another, and every unclaimed dtype is
tried in every example, so a refusing dtype cannot shadow a silently wrong one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
import torch
from hypothesis import event, given, note
from hypothesis import strategies as st

from dcp_impl.dtypes import DTYPES
from dcp_impl.layout import Box
from spec_tests import harness
from spec_tests import strategies as sts
from spec_tests.backends import Backend, claims
from spec_tests.properties._common import (
    Location,
    assert_nothing_committed,
    check_entry,
    claimed,
    draw_tensor,
    flat,
    kinds_for,
    request_for,
)
from spec_tests.verdicts import ContractViolation, may_refuse

__all__ = ["UnclaimedProperties", "record_refusal"]

Record = Callable[[str, object], None]

_MULTI_RANK_KINDS = ("rows", "cols", "uneven", "grid", "replicated")
_MULTI_CHUNK_KINDS = ("guillotine", "empty")


def record_refusal(record_property: Record, capability: str) -> None:
    """Mark the running test as one where an unclaimed capability was refused loudly.

    The matrix shows such a passing test as ``refuses`` rather than ``pass``.
    """
    record_property("dcp_outcome", "refuses")
    record_property("dcp_refused", capability)


def _skip_if_claimed(backend: Backend, capability: str) -> None:
    if claims(backend, capability):
        pytest.skip(f"backend {backend.name!r} claims {capability!r}: the other properties test it")


def attempt(
    backend: Backend,
    location: str,
    capability: str,
    states: Sequence[Mapping[str, Any]],
    values: Mapping[str, Any],
    loads: Sequence[Mapping[str, Sequence[Box] | None]],
) -> bool:
    """Save ``states`` (one per rank), load ``loads[r]`` on rank ``r`` and check it exactly.

    ``values`` are the saved entries, whole (flattened names); ``loads[r]`` maps an entry to
    the boxes rank ``r`` asks for (None: all of it). Return True if the backend refused (at
    save, leaving nothing loadable, or at load); raise ContractViolation naming
    ``capability`` if it did neither and the data came back wrong.
    """
    with may_refuse(f"saving with unclaimed {capability!r}") as saved:
        harness.save(backend, location, states)
    if saved.error is not None:
        note(f"the save refused {capability!r}: {type(saved.error).__name__}: {saved.error}")
        assert_nothing_committed(backend, location, values, f"the save refused {capability!r}")
        return True
    requests = [{k: request_for(values[k], boxes) for k, boxes in rank.items()} for rank in loads]
    with may_refuse(f"loading with unclaimed {capability!r}") as loaded:
        got = harness.load(backend, location, requests)
    if loaded.error is not None:
        note(f"the load refused {capability!r}: {type(loaded.error).__name__}: {loaded.error}")
        return True
    try:
        for rank, wanted in enumerate(loads):
            for fqn, boxes in wanted.items():
                check_entry(f"{fqn!r} on load rank {rank}", got[rank][fqn], values[fqn], boxes)
    except ContractViolation as exc:
        raise ContractViolation(
            f"backend {backend.name!r} does not claim {capability!r}, so it must round-trip "
            f"exactly or raise; it was silently wrong: {exc}"
        ) from exc
    return False


def _sharded(value: torch.Tensor, layout: sts.SaveLayout) -> list[dict[str, Any]]:
    """One state per save rank holding what ``layout`` gives it of ``value`` (as entry "t")."""
    return [{} if held is None else {"t": held} for held in harness.shard(value, layout.boxes)]


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
        for row in rows:
            value = data.draw(sts.tensor_values(row, shape), label=f"{row.name} values")
            capability = f"dtype:{row.name}"
            with harness.repro(dcp_backend, capability=capability, shape=shape):
                state = {"t": value}
                if attempt(dcp_backend, dcp_location(), capability, [state], state, [{"t": None}]):
                    event(f"refused {capability}")
                    record_refusal(record_property, capability)

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
        state = data.draw(
            sts.state_dicts(allowed=claimed(dcp_backend), allow_bytes=True), label="state dict"
        )
        state["extra object"] = {"step": 3, "tag": "x"}
        entries = flat(state)
        with harness.repro(dcp_backend, capability="bytes", state=state):
            loads = [dict.fromkeys(entries)]
            if attempt(dcp_backend, dcp_location(), "bytes", [state], entries, loads):
                record_refusal(record_property, "bytes")

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
        loads = [{"t": list(layout.boxes[0])}]
        with harness.repro(dcp_backend, capability="multi-chunk", layout=layout):
            states = _sharded(value, layout)
            if attempt(dcp_backend, dcp_location(), "multi-chunk", states, {"t": value}, loads):
                record_refusal(record_property, "multi-chunk")

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
        loads = [{"t": list(boxes)} if boxes else {} for boxes in layout.boxes]
        with harness.repro(dcp_backend, capability="multi-rank", layout=layout):
            states = _sharded(value, layout)
            if attempt(dcp_backend, dcp_location(), "multi-rank", states, {"t": value}, loads):
                record_refusal(record_property, "multi-rank")

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
        loads = [{"t": list(boxes)} for boxes in case.load_boxes]
        states = _sharded(value, case.save)
        with harness.repro(dcp_backend, capability="reshard", case=case):
            if attempt(dcp_backend, dcp_location(), "reshard", states, {"t": value}, loads):
                record_refusal(record_property, "reshard")
