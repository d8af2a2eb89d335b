"""Spec section 8: consolidated output, checked on its own.

A backend that consolidates (torch's HF writer with ``enable_consolidation=True``,
dcp_impl's ``HuggingFaceWriter(consolidate=True)``) writes full tensors after the
sharded save. The suite finds them through the backend's optional member
``consolidated(path) -> location`` and reads only the safetensors files directly in
that location, with ``safetensors.torch.load_file``, as a user of the output would: the
shards (kept elsewhere) cannot stand in for a consolidated tensor that is missing or
wrong. Backends without the member skip, saying so.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

import pytest
import safetensors.torch
import torch
from fsspec.core import url_to_fs
from hypothesis import given, note
from hypothesis import strategies as st

from dcp_impl.dtypes import DTYPES, DtypeInfo
from spec_tests import strategies as sts
from spec_tests.backends import Backend, claims
from spec_tests.contract.verdicts import ContractViolation
from spec_tests.plugin.profiles import few
from spec_tests.properties.checks import Location, claimed, kinds_for
from spec_tests.sim import harness

__all__ = ["ConsolidationProperties", "consolidated_tensors"]


def _consolidated(backend: Backend, path: str) -> str:
    hook = getattr(backend, "consolidated", None)
    if not callable(hook):
        pytest.skip(
            f"backend {backend.name!r} has no consolidated(path) member: "
            "it writes no consolidated output the suite can find"
        )
    location = hook(path)
    if not isinstance(location, str):
        raise ContractViolation(
            f"{backend.name}.consolidated({path!r}) returned {location!r}: expected a location"
        )
    return location


def consolidated_tensors(location: str) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors files directly in ``location``, loaded as a user would.

    A name found in two files is a violation: consolidated output holds each tensor once.
    """
    fs, root = url_to_fs(location)
    fs.invalidate_cache(root)
    found: dict[str, torch.Tensor] = {}
    where: dict[str, str] = {}
    for path in sorted(fs.ls(root, detail=False)):
        if not str(path).endswith(".safetensors") or fs.isdir(path):
            continue
        loaded = (
            safetensors.torch.load_file(path)
            if _is_local(fs)
            else safetensors.torch.load(fs.cat_file(path))
        )
        for name, tensor in loaded.items():
            if name in found:
                raise ContractViolation(
                    f"consolidated output in {location}: tensor {name!r} is in both "
                    f"{where[name]} and {posixpath.basename(path)}: expected it once, whole"
                )
            found[name], where[name] = tensor, posixpath.basename(path)
    return found


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols


def _check(location: str, expected: Mapping[str, torch.Tensor]) -> None:
    got = consolidated_tensors(location)
    if set(got) != set(expected):
        raise ContractViolation(
            f"consolidated output in {location}: expected tensors {sorted(expected)}, "
            f"found {sorted(got)}"
        )
    for name, value in expected.items():
        harness.assert_bit_equal(
            got[name], value, what=f"consolidated {name!r} (safetensors.torch.load_file)"
        )


def _sharded_states(
    backend: Backend, data: st.DataObject, value: torch.Tensor
) -> list[dict[str, Any]]:
    """Per rank, its part of ``value`` under a drawn layout (2 ranks where claimed)."""
    ranks = 2 if claims(backend, "multi-rank") else 1
    kinds = kinds_for(backend)
    layout = data.draw(sts.layouts(tuple(value.shape), ranks=ranks, kinds=kinds), label="layout")
    note(f"layout {layout.kind}: {layout.boxes}")
    return [{} if held is None else {"t": held} for held in harness.shard(value, layout.boxes)]


_DTYPE_NAMES = [row.name for row in DTYPES]


class ConsolidationProperties:
    """Consolidated output loads as whole, bit-exact tensors; reset retargets it."""

    @pytest.mark.parametrize("dtype_name", _DTYPE_NAMES)
    @few(4)
    @given(data=st.data())
    def test_consolidated_output_loads_whole(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject, dtype_name: str
    ) -> None:
        """A sharded save plus a 0-dim tensor of one claimed dtype consolidate to full tensors.

        ``safetensors.torch.load_file`` on the consolidated files gives each tensor whole,
        with its dtype and shape, bit for bit.
        """
        row = _claimed_row(dcp_backend, dtype_name)
        location = dcp_location()
        output = _consolidated(dcp_backend, location)
        shape = data.draw(sts.shapes(min_dims=1, max_dims=3), label="shape")
        value = data.draw(sts.tensor_values(row, shape), label="values")
        scalar = data.draw(sts.tensor_values(row, ()), label="0-dim value")
        states = _sharded_states(dcp_backend, data, value)
        states[0]["scalar"] = scalar
        with harness.repro(dcp_backend, dtype=row.name, shape=shape):
            # As dcp.save(state_dict, storage_writer=writer) calls it: no checkpoint_id, so
            # reset() has no location to retarget to (test_reset_retargets_consolidation).
            writers = [dcp_backend.make_writer(location) for _ in states]
            harness.save(dcp_backend, location, states, writers=writers, checkpoint_id=False)
            _check(output, {"t": value, "scalar": scalar})

    @few(8)
    @given(data=st.data())
    def test_reset_retargets_consolidation(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Writers made for one location and reset(other) consolidate into the other only."""
        first, second = dcp_location(), dcp_location()
        output = _consolidated(dcp_backend, second)
        # Retargeting does not depend on the dtype (the per-dtype property covers those): one
        # dtype, so that a dtype the consolidation breaks cannot mask a lost reset.
        dtype = next(iter(claimed(dcp_backend)))
        if claims(dcp_backend, "dtype:float32"):
            dtype = torch.float32
        shape = data.draw(sts.shapes(min_dims=1, max_dims=2), label="shape")
        value = data.draw(sts.tensor_values(dtype, shape), label="values")
        states = _sharded_states(dcp_backend, data, value)
        with harness.repro(dcp_backend, dtype=value.dtype, shape=tuple(value.shape)):
            writers = [dcp_backend.make_writer(first) for _ in states]
            harness.save(dcp_backend, second, states, writers=writers)
            _check(output, {"t": value})
            fs, root = url_to_fs(first)
            fs.invalidate_cache(root)
            stray = fs.find(root) if fs.exists(root) else []
            if stray:
                raise ContractViolation(
                    f"writers made for {first} and reset({second!r}) wrote "
                    f"{[posixpath.relpath(p, root) for p in stray][:5]} under {first}: "
                    "expected nothing there"
                )


def _claimed_row(backend: Backend, name: str) -> DtypeInfo:
    if not claims(backend, f"dtype:{name}"):
        pytest.skip(f"backend {backend.name!r} does not claim capability 'dtype:{name}'")
    return next(row for row in DTYPES if row.name == name)
