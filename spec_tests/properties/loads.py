"""Spec section 18: loads as jobs do them.

A checkpoint is rarely loaded exactly as it was saved:

* an evaluation or fine-tuning job loads the model's entries from a training checkpoint that
  also holds optimizer state, and asks for them in its own order: a load of **any subset in
  any order** returns exactly those entries (a reader that pairs read items with stored items
  by position, or reads what was not asked for, fails);
* a trainer keeps **one reader** and points it at each checkpoint it loads (``dcp.load``
  resets it): what it found in one checkpoint must not answer for the next (a reader that
  keeps its file index or metadata across ``reset`` loads the old checkpoint's bytes);
* a job loads into tensors of **another dtype** than the checkpoint holds (a bf16 model and
  an fp32 checkpoint): the load raises, never converts;
* a file of the checkpoint is **gone or empty** (a partial copy, a lifecycle rule on a
  bucket, a full disk during a copy): the load raises, or returns exactly what was saved;
  it never completes with the destination left as it was, zeros, or a short read's tail.

Each named case is tried in every run: the last entry alone, every entry in reverse order,
and each stored file both removed and emptied.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dcp_impl.layout import Box
from spec_tests import strategies as sts
from spec_tests.backends import Backend, claims
from spec_tests.contract.verdicts import ContractViolation, may_refuse
from spec_tests.properties.checks import (
    Location,
    check_entry,
    check_load,
    claimed,
    draw_tensor,
    flat,
    pattern,
    request_for,
)
from spec_tests.properties.hostile_files import local_root, stored_files
from spec_tests.sim import harness

__all__ = ["LoadProperties", "other_bits"]

#: Destinations of another dtype than the stored one (stored, destination): narrower, the same
#: size (where a reader that lands bytes directly reinterprets them), another format of the
#: same size, and wider (lossless, still a conversion nobody asked the checkpoint for).
_OTHER_DTYPES = sts.NamedCases(
    {
        "float32 into bfloat16": (torch.float32, torch.bfloat16),
        "float32 into int32": (torch.float32, torch.int32),
        "float16 into bfloat16": (torch.float16, torch.bfloat16),
        "bfloat16 into float32": (torch.bfloat16, torch.float32),
    }
)

#: Elements of SENTINEL before and after each destination of the guarded-buffer property (odd,
#: so the destinations start at unaligned offsets).
_GUARD = 7

#: How a stored file is damaged, each tried on every file: removed, or cut to no bytes.
_GONE: sts.NamedCases[Callable[[Path], None]] = sts.NamedCases(
    {"removed": os.unlink, "emptied": lambda path: os.truncate(path, 0)}
)


def other_bits(value: torch.Tensor) -> torch.Tensor:
    """``value`` with the lowest bit of every byte flipped: same dtype and shape, every byte
    different, and still a valid value of every dtype (``bool`` included)."""
    raw = harness.as_bytes(value.contiguous()) ^ 1
    return raw.view(value.dtype).reshape(value.shape) if value.numel() else value.clone()


def _plain(value: Any) -> Any:
    """A tensor as a fresh contiguous tensor of its values (no lazy bits, no shared memory)."""
    if not isinstance(value, torch.Tensor):
        return value
    return value.resolve_conj().resolve_neg().clone(memory_format=torch.contiguous_format)


def _load_subset(backend: Backend, location: str, entries: dict[str, Any], keys: list[str]) -> None:
    """Load ``keys`` (in that order) and check each against ``entries``."""
    requests = {key: request_for(entries[key]) for key in keys}
    loaded = harness.load(backend, location, [requests])[0]
    for key in keys:
        check_entry(f"{key} (loading only {len(keys)} of {len(entries)} entries)",
                    loaded[key], entries[key])  # fmt: skip


class LoadProperties:
    """Loads of part of a checkpoint, through a reused reader, and with a stored file gone."""

    @given(data=st.data())
    def test_any_subset_in_any_order(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Some of the saved entries, asked for in another order, load back exactly (and
        nothing else is committed); the last entry alone and every entry reversed are tried
        in every example."""
        state = data.draw(
            sts.state_dicts(
                allowed=claimed(dcp_backend),
                allow_bytes=claims(dcp_backend, "bytes"),
                max_entries=24,
            ),
            label="state dict",
        )
        # Plain tensors: the views of every kind are the round-trip properties' business; here
        # they would only hide a load-side bug behind a backend's known save-side ones.
        entries = {key: _plain(value) for key, value in flat(state).items()}
        keys = list(entries)
        drawn = data.draw(
            st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys), unique=True),
            label="entries loaded, in order",
        )
        location = dcp_location()
        with harness.repro(dcp_backend, saved=keys, loaded=drawn):
            harness.save(dcp_backend, location, [entries])
            for subset in (drawn, keys[-1:], keys[::-1]):
                _load_subset(dcp_backend, location, entries, subset)

    @given(data=st.data())
    def test_one_reader_for_several_checkpoints(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """One reader instance loads checkpoint A, then B (same names, shapes and dtypes,
        every byte different), then A again: each load returns that checkpoint's values."""
        value = draw_tensor(data, dcp_backend, max_dims=3)
        first = {"t": value}
        second = {"t": other_bits(value)}
        if claims(dcp_backend, "bytes"):
            first["step"], second["step"] = 1, 2  # type: ignore[assignment]
        a, b = dcp_location(), dcp_location()
        with harness.repro(dcp_backend, dtype=value.dtype, shape=tuple(value.shape)):
            harness.save(dcp_backend, a, [first])
            harness.save(dcp_backend, b, [second])
            reader = dcp_backend.make_reader(a)
            for location, state in ((a, first), (b, second), (a, first)):
                check_load(dcp_backend, location, state, readers=[reader])

    @given(data=st.data())
    def test_destinations_inside_a_larger_buffer(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Each destination is a view inside a larger buffer (FSDP's flat parameters are views
        of one), :data:`_GUARD` elements from either end: the load fills the views exactly
        and changes not one byte around them (a reader that writes from its destination's
        storage start, or past its end, overwrites a neighbouring parameter)."""
        state = {
            f"p{i}": draw_tensor(data, dcp_backend, max_dims=3)
            for i in range(data.draw(st.integers(1, 4), label="entries"))
        }
        location = dcp_location()
        with harness.repro(dcp_backend, shapes={k: tuple(v.shape) for k, v in state.items()}):
            harness.save(dcp_backend, location, [state])
            strided = data.draw(st.booleans(), label="strided destinations")
            requests = {
                key: harness.TensorRequest(
                    value.dtype, tuple(value.shape), (Box.full(tuple(value.shape)),), strided,
                    guard=_GUARD,
                )
                for key, value in state.items()
            }  # fmt: skip
            loaded = harness.load(dcp_backend, location, [requests])[0]
            for key, value in state.items():
                (view,) = loaded[key]
                check_entry(key, [view], value)
                _check_guard(key, view)

    def test_missing_or_empty_file_raises_or_loads_exactly(
        self, dcp_backend: Backend, dcp_location: Location
    ) -> None:
        """Each stored file in turn removed, and cut to no bytes: the load raises or returns
        exactly what was saved. (Only local files can be damaged: URL roots skip.)"""
        dtypes = claimed(dcp_backend)
        dtype = torch.float32 if torch.float32 in dtypes else dtypes[0]
        state: dict[str, Any] = {"a": pattern(dtype, (16, 8)), "b": pattern(dtype, (3, 5))}
        if claims(dcp_backend, "bytes"):
            state["step"] = "epoch 3 " + "x" * 64
        location = dcp_location()
        root = local_root(location)
        with harness.repro(dcp_backend, dtype=dtype):
            harness.save(dcp_backend, location, [state])
            for path in stored_files(root):
                kept = path.read_bytes()
                for damage, cut in _GONE:
                    cut(path)
                    try:
                        _raises_or_exact(
                            dcp_backend, location, state, f"{path.relative_to(root)} {damage}"
                        )
                    finally:
                        path.write_bytes(kept)

    def test_destination_of_another_dtype_raises(
        self, dcp_backend: Backend, dcp_location: Location
    ) -> None:
        """A load whose destination has another dtype than the checkpoint stores raises: it
        never converts (a fine-tuning job's bf16 model loading an fp32 checkpoint would lose
        precision with no error, pytorch#187138). Every named pair of dtypes in every run."""
        tried = 0
        for label, (stored, dest) in _OTHER_DTYPES:
            if stored not in claimed(dcp_backend):
                continue
            tried += 1
            value = pattern(stored, (4, 3))
            location = dcp_location()
            with harness.repro(dcp_backend, case=label):
                harness.save(dcp_backend, location, [{"t": value}])
                whole = (Box.full((4, 3)),)
                request = harness.TensorRequest(stored, (4, 3), whole, dest_dtype=dest)
                with may_refuse(f"loading a {stored} entry into a {dest} tensor") as outcome:
                    loaded = harness.load(dcp_backend, location, [{"t": request}])[0]
                if not outcome.refused:
                    raise ContractViolation(
                        f"{label}: the load completed, converting the stored {stored} values "
                        f"into the {dest} destination ({loaded['t'][0].flatten()[:4].tolist()}); "
                        "expected it to raise: a load never converts dtypes"
                    )
        if not tried:
            pytest.skip(f"backend {dcp_backend.name!r} claims none of float32, float16, bfloat16")


def _check_guard(key: str, view: torch.Tensor) -> None:
    """Raise ContractViolation unless every byte of ``view``'s storage outside it is still
    SENTINEL."""
    raw = torch.empty(0, dtype=torch.uint8).set_(view.untyped_storage())
    start = view.storage_offset() * view.element_size()
    end = start + view.numel() * view.element_size()
    outside = torch.cat([raw[:start], raw[end:]])
    changed = (outside != harness.SENTINEL).nonzero()
    if len(changed):
        first = int(changed[0])
        where = first if first < start else first + (end - start)
        raise ContractViolation(
            f"{key!r}: the load wrote {len(changed)} byte(s) outside its destination, the "
            f"first at byte {where} of a buffer whose destination is bytes [{start}, {end}); "
            "expected a load to write its destinations and nothing around them"
        )


def _raises_or_exact(backend: Backend, location: str, state: dict[str, Any], what: str) -> None:
    """Load ``state`` back: raising is fine, completing with other values is a violation."""
    requests = {key: request_for(value) for key, value in state.items()}
    try:
        with may_refuse(f"loading where {what}") as outcome:
            loaded = harness.load(backend, location, [requests])[0]
    except harness.MissingEntry:
        return  # the metadata lost the entry: DCP's planner raises, so the load is loud
    if outcome.refused:
        return
    for key, value in state.items():
        try:
            check_entry(key, loaded[key], value)
        except ContractViolation as verdict:
            raise ContractViolation(
                f"{what}: the load completed with values other than those saved ({verdict}); "
                "expected it to raise or to return exactly what was saved"
            ) from verdict
