"""Spec section 3: a tensor is never stored smaller than the size ``finish`` was given.

DCP hands the backend each tensor's full size in the metadata (``finish``) and its chunks
in the write items. When the chunks stop short of the end (a planner bug, or torch's
own planning accepting a hole on a single plan), the backend may refuse the save; if it
commits, ``read_metadata`` must still report the size it was given, and a load of the
region no chunk covers must raise: a smaller tensor, or a hole that loads as whatever
the destination held, is silently wrong data.
"""

from __future__ import annotations

import itertools

import torch
from hypothesis import given, note
from hypothesis import strategies as st
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from dcp_impl.layout import Box
from spec_tests import strategies as sts
from spec_tests.backends import Backend, claims
from spec_tests.contract.verdicts import ContractViolation, may_refuse
from spec_tests.properties.checks import Location, claimed
from spec_tests.sim import harness

__all__ = ["CoverageProperties"]


def _rows(shape: tuple[int, ...], start: int, stop: int) -> Box:
    return Box((start,) + (0,) * (len(shape) - 1), (stop - start, *shape[1:]))


def _stored_size(backend: Backend, location: str) -> tuple[int, ...]:
    reader = backend.make_reader(location)
    harness.call("reset", reader.reset, location)
    entry = harness.call("read_metadata", reader.read_metadata).state_dict_metadata.get("t")
    if not isinstance(entry, TensorStorageMetadata):
        raise ContractViolation(f"read_metadata: expected a tensor entry 't', found {entry!r}")
    return tuple(entry.size)


class CoverageProperties:
    """Chunks that stop short of a tensor's end never yield a smaller tensor."""

    @given(data=st.data())
    def test_chunks_short_of_the_end(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Rows [0, cut) of an n-row tensor saved with size n: refused, or size n and rows
        [cut, n) refuse to load."""
        row = data.draw(sts.dtypes(allowed=claimed(dcp_backend)), label="dtype")
        shape = data.draw(
            sts.shapes(min_dims=1, max_dims=3).filter(lambda s: s[0] >= 2 and 0 not in s),
            label="shape",
        )
        cut = data.draw(st.integers(1, shape[0] - 1), label="rows saved")
        value = data.draw(sts.tensor_values(row, shape), label="values")
        several = claims(dcp_backend, "multi-rank") and cut >= 2
        ranks = data.draw(st.integers(1, 2 if several else 1), label="ranks")
        split = [0, cut] if ranks == 1 else [0, cut // 2, cut]
        note(f"dtype={row.name} shape={shape} rows saved={split} over {ranks} rank(s)")
        states = []
        for start, stop in itertools.pairwise(split):
            box = _rows(shape, start, stop)
            states.append({"t": harness.Shards(shape, ((box, harness.region(value, box)),))})
        location = dcp_location()
        with harness.repro(dcp_backend, dtype=row.name, shape=shape, rows_saved=cut):
            with may_refuse("saving chunks that stop short of the tensor's end") as save:
                harness.save(dcp_backend, location, states)
            if save.refused:
                return
            stored = _stored_size(dcp_backend, location)
            if stored != shape:
                raise ContractViolation(
                    f"chunks covering rows [0, {cut}) of a tensor of size {shape} were saved "
                    f"with that size given to finish: read_metadata reports size {stored}, "
                    f"expected {shape} (a smaller tensor silently drops rows)"
                )
            _uncovered_load_raises(dcp_backend, location, value, _rows(shape, cut, shape[0]))


def _uncovered_load_raises(backend: Backend, location: str, value: torch.Tensor, hole: Box) -> None:
    request = harness.TensorRequest(value.dtype, tuple(value.shape), (hole,))
    with may_refuse("loading the region no saved chunk covers") as load:
        harness.load(backend, location, [{"t": request}])
    if not load.refused:
        raise ContractViolation(
            f"loading {hole} of 't', which no saved chunk covers, succeeded: expected an "
            "error (the destination keeps whatever it held: silently wrong data)"
        )
