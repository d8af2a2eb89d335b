"""Helpers the property modules share: capability-aware draws and one-call round trips.

Public: the probe command and the project's own tests use them too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
import torch
from hypothesis import note
from hypothesis import strategies as st
from torch.distributed.checkpoint._nested_dict import flatten_state_dict

from dcp_impl.dtypes import by_torch
from dcp_impl.layout import Box
from spec_tests import strategies as sts
from spec_tests.backends import Backend, claimed_dtypes, claims
from spec_tests.contract.verdicts import ContractViolation, may_refuse
from spec_tests.sim import harness

Location = Callable[[], str]

MIB = 1 << 20
# Past any small-buffer fast path, and past the piece sizes real backends use for hashing,
# staging and coalescing (dcp_impl hashes 8 MiB pieces and coalesces 16 MiB reads).
LARGE_BYTES = 64 * MIB
# Buffer sizes that backends commonly round to; each is crossed one element either way.
BOUNDARIES_MIB = (1, 4, 8, 16, 32)


def claimed(backend: Backend) -> list[torch.dtype]:
    """The dtypes to draw from; skip the test if the backend claims none."""
    dtypes = claimed_dtypes(backend)
    if not dtypes:
        pytest.skip(f"backend {backend.name!r} claims no dtype:<name> capability")
    return dtypes


def kinds_for(backend: Backend) -> tuple[str, ...]:
    """Layout kinds whose saves the backend claims to handle."""
    return sts.kinds_within({c for c in ("multi-rank", "multi-chunk") if claims(backend, c)})


def flat(state: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict as DCP flattens it (``"outer.inner"`` keys)."""
    return dict(flatten_state_dict(dict(state))[0])


def request_for(
    value: Any, boxes: Sequence[Box] | None = None, *, strided: bool = False
) -> harness.Request:
    """What to ask a load for to get ``value`` (or these boxes of it) back."""
    if not isinstance(value, torch.Tensor):
        return harness.BytesRequest()
    shape = tuple(value.shape)
    chosen = tuple(boxes) if boxes is not None else (Box.full(shape),)
    return harness.TensorRequest(value.dtype, shape, chosen, strided)


def check_entry(fqn: str, loaded: Any, value: Any, boxes: Sequence[Box] | None = None) -> None:
    """Raise ContractViolation unless ``loaded`` is ``value`` (or its boxes) bit for bit."""
    if not isinstance(value, torch.Tensor):
        if loaded != value or type(loaded) is not type(value):
            raise ContractViolation(f"{fqn!r}: expected {value!r}, loaded {loaded!r}")
        return
    chosen = list(boxes) if boxes is not None else [Box.full(tuple(value.shape))]
    for box, got in zip(chosen, loaded, strict=True):
        harness.assert_bit_equal(got, harness.region(value, box), what=f"{fqn!r} box {box}")


def check_load(
    backend: Backend,
    location: str,
    state: Mapping[str, Any],
    *,
    strided: bool = False,
    **load_kwargs: Any,
) -> dict[str, Any]:
    """Load every entry of ``state`` back whole from one rank and check it bit-exactly."""
    entries = flat(state)
    requests = {k: request_for(v, strided=strided) for k, v in entries.items()}
    loaded = harness.load(backend, location, [requests], **load_kwargs)[0]
    for fqn, value in entries.items():
        check_entry(fqn, loaded[fqn], value)
    return loaded


def roundtrip(
    backend: Backend, location: str, state: Mapping[str, Any], *, strided: bool = False
) -> dict[str, Any]:
    """Save ``state`` from one rank, then :func:`check_load` it."""
    harness.save(backend, location, [state])
    return check_load(backend, location, state, strided=strided)


def assert_nothing_committed(
    backend: Backend, location: str, state: Mapping[str, Any], why: str
) -> None:
    """Raise ContractViolation if any entry of ``state`` can be loaded from ``location``.

    Reading the metadata may raise (nothing committed); metadata that lists none of the
    entries commits nothing of them either. Entries it does list must fail to load.
    (Whether an empty location's ``read_metadata`` raises is ``test_reset_retargets``'s
    business, not this check's.)
    """
    entries = flat(state)
    reader = backend.make_reader(location)
    with may_refuse(f"reading the metadata where {why}") as reading:
        harness.call("reset", reader.reset, location)
        metadata = harness.call("read_metadata", reader.read_metadata)
    if reading.refused:
        return
    listed = sorted(set(entries) & set(getattr(metadata, "state_dict_metadata", {})))
    if not listed:
        return
    with may_refuse(f"loading where {why}") as loading:
        harness.load(backend, location, [{k: request_for(entries[k]) for k in listed}])
    if not loading.refused:
        raise ContractViolation(f"{why}, yet left entries {listed} loadable")


def sharded_save(
    backend: Backend, location: str, fqn: str, value: torch.Tensor, layout: sts.SaveLayout
) -> None:
    """Save ``value`` split as ``layout`` says, one simulated rank per layout rank."""
    states = [{} if held is None else {fqn: held} for held in harness.shard(value, layout.boxes)]
    harness.save(backend, location, states)


def load_boxes(
    backend: Backend,
    location: str,
    fqn: str,
    value: torch.Tensor,
    boxes: Sequence[Sequence[Box]],
    *,
    strided: bool = False,
) -> None:
    """Load ``boxes[r]`` on rank ``r`` and check each against ``value``."""
    requests = [{fqn: request_for(value, rank_boxes, strided=strided)} for rank_boxes in boxes]
    for rank, (rank_boxes, got) in enumerate(
        zip(boxes, harness.load(backend, location, requests), strict=True)
    ):
        check_entry(f"{fqn} on load rank {rank}", got[fqn], value, rank_boxes)


def draw_tensor(
    data: st.DataObject,
    backend: Backend,
    *,
    shape: Sequence[int] | None = None,
    max_dims: int = 3,
    min_dims: int = 0,
    max_side: int = 6,
) -> torch.Tensor:
    """Draw a tensor of a claimed dtype (labelled for the failure report)."""
    row = data.draw(sts.dtypes(allowed=claimed(backend)), label="dtype")
    chosen = (
        tuple(shape)
        if shape is not None
        else data.draw(
            sts.shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side), label="shape"
        )
    )
    value = data.draw(sts.tensor_values(row, chosen), label="values")
    note(f"dtype={row.name} shape={chosen}")
    return value


def pattern(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """A contiguous tensor of ``dtype`` whose bytes all differ from their neighbours'."""
    numel = math.prod(shape)
    itemsize = by_torch(dtype).itemsize
    raw = torch.arange(numel * itemsize) * 37 % 251 + 1
    if dtype is torch.bool:
        raw %= 2  # the only valid bool bytes
    return raw.to(torch.uint8).view(dtype).reshape(shape)
