"""Spec section 4: the StorageWriter/StorageReader call contract."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spec_tests import strategies as sts
from spec_tests.backends import Backend, claims
from spec_tests.contract.verdicts import ContractViolation, may_refuse
from spec_tests.properties.checks import (
    Location,
    check_load,
    claimed,
    draw_tensor,
    flat,
    request_for,
)
from spec_tests.sim import harness

__all__ = ["ContractProperties"]

#: Checkpoint ids every run gives validate_checkpoint_id: what users pass (URLs, ``~``,
#: ``Path``), what they pass by mistake (None, bytes, numbers) and names no store can hold.
_NAMED_IDS: sts.NamedCases[object] = sts.NamedCases(
    {
        "None": None,
        "empty": "",
        "NUL": "\x00",
        "object-store URL": "s3://bucket/key",
        "gs URL": "gs://bucket/prefix/ckpt",
        "file URL": "file:///tmp/ckpt",
        "home": "~/nope",
        "5000 characters": "a" * 5000,
        "below a file": "/dev/null/x",
        "Path": pathlib.PurePosixPath("ckpt/step-1"),
        "bytes": b"/tmp/ckpt",
        "int": 0,
        "float": float("nan"),
        "list": ["ckpt"],
        "object": object(),
    }
)

_GARBAGE = _NAMED_IDS.or_drawn(
    st.one_of(
        st.none(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(),
        st.binary(),
        st.lists(st.integers(), max_size=3),
        st.builds(object),
        st.builds(pathlib.Path, st.text(max_size=20)),
    )
)


def _state(backend: Backend, data: st.DataObject) -> dict[str, Any]:
    return data.draw(
        sts.state_dicts(allowed=claimed(backend), allow_bytes=claims(backend, "bytes")),
        label="state dict",
    )


class ContractProperties:
    """Call order, results per item, reset retargeting, validate_checkpoint_id, overwrite."""

    @given(data=st.data())
    def test_one_write_result_per_item(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """write_data's future completes with one WriteResult per WriteItem (harness-checked)."""
        state = _state(dcp_backend, data)
        with harness.repro(dcp_backend, state=state):
            record = harness.save(dcp_backend, dcp_location(), [state])
            planned = sum(len(p.items) for p in record.plans)
            written = sum(len(r) for r in record.results)
            if planned != written:
                raise ContractViolation(f"{planned} WriteItems but {written} WriteResults")

    @given(data=st.data())
    def test_reset_retargets(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """A writer/reader made for one location and reset(other) works on the other only."""
        value = draw_tensor(data, dcp_backend, max_dims=2)
        first, second = dcp_location(), dcp_location()
        with harness.repro(dcp_backend, dtype=value.dtype, shape=tuple(value.shape)):
            writer = dcp_backend.make_writer(first)
            harness.save(dcp_backend, second, [{"t": value}], writers=[writer])
            reader = dcp_backend.make_reader(first)
            check_load(dcp_backend, second, {"t": value}, readers=[reader])
            with may_refuse(f"loading {first!r}, where nothing was saved") as outcome:
                harness.load(dcp_backend, first, [{"t": request_for(value)}])
            if not outcome.refused:
                raise ContractViolation(
                    f"loading {first!r}, where nothing was saved, did not raise"
                )

    @given(data=st.data())
    def test_writer_reused_for_two_saves(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """One writer instance, reset between saves (as dcp.save reuses it), saves both."""
        a = draw_tensor(data, dcp_backend, max_dims=2)
        b = draw_tensor(data, dcp_backend, max_dims=2)
        first, second = dcp_location(), dcp_location()
        with harness.repro(dcp_backend, first=a, second=b):
            writer = dcp_backend.make_writer(first)
            harness.save(dcp_backend, first, [{"t": a}], writers=[writer])
            harness.save(dcp_backend, second, [{"t": b}], writers=[writer])
            check_load(dcp_backend, first, {"t": a})
            check_load(dcp_backend, second, {"t": b})

    @_NAMED_IDS.examples("checkpoint_id")
    @given(checkpoint_id=_GARBAGE)
    def test_validate_checkpoint_id_is_total(
        self, dcp_backend: Backend, dcp_location: Location, checkpoint_id: object
    ) -> None:
        """validate_checkpoint_id returns a bool for any input (never raises); every named id
        (URLs, None, bytes, ...) is tried in every run."""
        location = dcp_location()
        for made in (dcp_backend.make_writer(location), dcp_backend.make_reader(location)):
            for target in (type(made), made):
                label = f"{type(made).__name__}.validate_checkpoint_id({checkpoint_id!r})"
                result = harness.call(label, target.validate_checkpoint_id, checkpoint_id)
                if not isinstance(result, bool):
                    raise ContractViolation(f"{label} returned {result!r}: expected a bool")

    @given(data=st.data())
    def test_extra_kwargs_accepted(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Methods declared with **kwargs accept keywords a newer torch may pass."""
        state = _state(dcp_backend, data)
        extra = {"dcp_spec_future_option": True}
        location = dcp_location()
        with harness.repro(dcp_backend, state=state, extra_kwargs=extra):
            harness.save(dcp_backend, location, [state], extra_kwargs=extra)
            check_load(dcp_backend, location, state, extra_kwargs=extra)

    @pytest.mark.dcp_requires("overwrite")
    @given(data=st.data())
    def test_overwrite_replaces(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """A second save at a location replaces the first: its entries and values only."""
        old, new = _state(dcp_backend, data), _state(dcp_backend, data)
        location = dcp_location()
        with harness.repro(dcp_backend, old=old, new=new):
            harness.save(dcp_backend, location, [old])
            harness.save(dcp_backend, location, [new])
            check_load(dcp_backend, location, new)
            reader = dcp_backend.make_reader(location)
            harness.call("reset", reader.reset, location)
            stored = set(harness.call("read_metadata", reader.read_metadata).state_dict_metadata)
            if stored != set(flat(new)):
                raise ContractViolation(
                    f"after overwrite: expected entries {sorted(flat(new))}, found {sorted(stored)}"
                )
