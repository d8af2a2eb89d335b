"""Spec section 4 (contract), configurations: what a writer was built with survives ``reset``.

``dcp.save(state_dict, storage_writer=writer, checkpoint_id=...)`` resets the same writer to
each new location, so a trainer saving every N steps uses one writer for many checkpoints.
A writer built with options (worker threads, consolidation, a sub-option) must save the
second checkpoint as it saved the first: judged by the effects, not by the writer's fields.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
from fsspec.core import url_to_fs

from spec_tests.backends import Backend, claims
from spec_tests.contract.verdicts import ContractViolation
from spec_tests.properties.checks import Location, check_load, claimed, pattern
from spec_tests.properties.consolidation import consolidated_tensors
from spec_tests.sim import harness

__all__ = ["ConfigurationProperties", "stored_names"]

# Per-save tokens in stored names (uuids, hex save ids): equal saves differ only in them.
_TOKEN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,}")


def stored_names(location: str) -> Counter[str]:
    """The files or objects under ``location``, relative, with per-save tokens masked."""
    fs, root = url_to_fs(location)
    fs.invalidate_cache(root)
    if not fs.exists(root):
        return Counter()
    base = root.rstrip("/") + "/"
    return Counter(_TOKEN.sub("<id>", str(p).removeprefix(base)) for p in fs.find(root))


def _state(backend: Backend, salt: int) -> dict[str, Any]:
    """Enough entries of every claimed dtype for a writer's threads to split them."""
    state: dict[str, Any] = {}
    for k, dtype in enumerate(claimed(backend)):
        value = pattern(dtype, (8 + k % 3, 16))
        state[f"layer{k}.weight"] = value.roll(salt, 0)
        state[f"layer{k}.scale"] = pattern(dtype, ()).clone()
    if claims(backend, "bytes"):
        state["progress"] = {"step": 100 + salt, "tag": f"save {salt}"}
    return state


def _tensors(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


class ConfigurationProperties:
    """One writer, reset from checkpoint to checkpoint, behaves as a fresh one would."""

    def test_reset_keeps_configuration(self, dcp_backend: Backend, dcp_location: Location) -> None:
        """A writer reset to a new location saves there what a fresh writer saves: the same
        stored files (per-save tokens aside), the same consolidated output (where the backend
        has a ``consolidated`` member), loadable with the same reader; the first checkpoint
        is left as it was."""
        first, second, fresh = dcp_location(), dcp_location(), dcp_location()
        before, after = _state(dcp_backend, 0), _state(dcp_backend, 1)
        writer = dcp_backend.make_writer(first)
        with harness.repro(dcp_backend, locations=[first, second, fresh]):
            harness.save(dcp_backend, first, [before], writers=[writer])
            first_files = stored_names(first)
            harness.save(dcp_backend, second, [after], writers=[writer])
            harness.save(dcp_backend, fresh, [after])
            check_load(dcp_backend, second, after)
            check_load(dcp_backend, first, before)
            _same_files(second, fresh)
            if stored_names(first) != first_files:
                raise ContractViolation(
                    f"a save through the writer reset to {second} changed the files of the "
                    f"first checkpoint: {dict(first_files)} became {dict(stored_names(first))}"
                )
            hook = getattr(dcp_backend, "consolidated", None)
            if callable(hook):
                _same_consolidated(hook(second), hook(fresh), _tensors(after))


def _same_files(reused: str, fresh: str) -> None:
    got, want = stored_names(reused), stored_names(fresh)
    if got != want:
        raise ContractViolation(
            f"the writer reset to {reused} stored {sorted(got.elements())}; a fresh writer "
            f"built the same way stored {sorted(want.elements())}: the reset writer lost part "
            "of its configuration"
        )


def _same_consolidated(reused: str, fresh: str, tensors: Mapping[str, torch.Tensor]) -> None:
    got, want = consolidated_tensors(reused), consolidated_tensors(fresh)
    if sorted(got) != sorted(want):
        raise ContractViolation(
            f"consolidated output of the reset writer holds {sorted(got)}; a fresh writer's "
            f"holds {sorted(want)}"
        )
    for name, value in want.items():
        harness.assert_bit_equal(got[name], value, what=f"consolidated {name!r} after reset")
    missing = sorted(set(tensors) - set(got))
    if missing and got:
        raise ContractViolation(f"consolidated output after reset lacks {missing}")
