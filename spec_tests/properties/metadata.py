"""Spec section 3: what read_metadata returns is what finish was given."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    Metadata,
    TensorStorageMetadata,
)

from dcp_impl.layout import Box, holes, out_of_bounds
from spec_tests import strategies as sts
from spec_tests.backends import Backend, claims
from spec_tests.contract.verdicts import ContractViolation
from spec_tests.properties.checks import Location, claimed, flat, kinds_for
from spec_tests.sim import harness

__all__ = ["MetadataProperties"]


class MetadataProperties:
    """read_metadata() against the Metadata the coordinator's finish() received."""

    @pytest.mark.dcp_requires("metadata-exact")
    @given(data=st.data())
    def test_read_metadata_equals_finish(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Entries, chunks and planner_data read back equal; only storage_meta.load_id may vary."""
        given_md, read_md = self._save_and_read(dcp_backend, dcp_location, data)
        with harness.repro(dcp_backend, saved=given_md.state_dict_metadata):
            if read_md.state_dict_metadata != given_md.state_dict_metadata:
                raise ContractViolation(
                    f"state_dict_metadata: expected {given_md.state_dict_metadata!r}, "
                    f"found {read_md.state_dict_metadata!r}"
                )
            if read_md.planner_data != given_md.planner_data:
                raise ContractViolation(
                    f"planner_data: expected {given_md.planner_data!r}, "
                    f"found {read_md.planner_data!r}"
                )

    @given(data=st.data())
    def test_metadata_structure(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Same entries, kinds, sizes and dtypes; chunks lie in bounds and cover each tensor."""
        given_md, read_md = self._save_and_read(dcp_backend, dcp_location, data)
        want, got = given_md.state_dict_metadata, read_md.state_dict_metadata
        with harness.repro(dcp_backend, saved=want, read=got):
            if set(want) != set(got):
                raise ContractViolation(f"entries: expected {sorted(want)}, found {sorted(got)}")
            for fqn, entry in want.items():
                _check_entry(fqn, entry, got[fqn])

    def _save_and_read(
        self, backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> tuple[Metadata, Metadata]:
        state = data.draw(
            sts.state_dicts(allowed=claimed(backend), allow_bytes=claims(backend, "bytes")),
            label="state dict",
        )
        ranks = data.draw(st.integers(1, 3 if claims(backend, "multi-rank") else 1), label="ranks")
        entries = flat(state)
        states: list[dict[str, object]] = [{} for _ in range(ranks)]
        for fqn, value in entries.items():
            if hasattr(value, "shape"):
                layout = data.draw(
                    sts.layouts(value.shape, ranks=ranks, kinds=kinds_for(backend)),
                    label=f"layout of {fqn!r}",
                )
                for rank, held in enumerate(harness.shard(value, layout.boxes)):
                    if held is not None:
                        states[rank][fqn] = held
            else:
                states[0][fqn] = value
        location = dcp_location()
        record = harness.save(backend, location, states)
        given_md = copy.deepcopy(record.metadata)
        reader = backend.make_reader(location)
        harness.call("reset", reader.reset, location)
        read_md = harness.call(f"{backend.name} read_metadata", reader.read_metadata)
        if not isinstance(read_md, Metadata):
            raise ContractViolation(
                f"read_metadata returned {type(read_md).__name__}: expected Metadata"
            )
        return given_md, read_md


def _check_entry(fqn: str, want: object, got: object) -> None:
    if isinstance(want, BytesStorageMetadata):
        if not isinstance(got, BytesStorageMetadata):
            raise ContractViolation(f"{fqn!r}: expected BytesStorageMetadata, found {got!r}")
        return
    assert isinstance(want, TensorStorageMetadata)  # DCP has only these two kinds
    if not isinstance(got, TensorStorageMetadata):
        raise ContractViolation(f"{fqn!r}: expected TensorStorageMetadata, found {got!r}")
    if got.size != want.size or got.properties.dtype != want.properties.dtype:
        raise ContractViolation(
            f"{fqn!r}: expected size {tuple(want.size)} dtype {want.properties.dtype}, "
            f"found size {tuple(got.size)} dtype {got.properties.dtype}"
        )
    boxes = [Box.of(c) for c in got.chunks]
    outside = [b for b in boxes if b.ndim != len(got.size) or out_of_bounds(got.size, b)]
    if outside:
        raise ContractViolation(f"{fqn!r}: chunks {outside} lie outside size {tuple(got.size)}")
    missing = holes(got.size, boxes)
    if missing:
        raise ContractViolation(f"{fqn!r}: stored chunks {boxes} leave {missing} uncovered")
