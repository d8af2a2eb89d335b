"""Spec section 9: collective-free saves and save-plan caching, as large training jobs save.

- **Collective-free saves** (``dcp.save(..., use_collectives=False)``): no rank waits for
  another; each plans alone and commits its own metadata (torch writes one file per rank).
  The checkpoint is then loaded two ways, each over one or more ranks that all ask for the
  whole tensor: with the default loader's global ``read_metadata()``, and with rank-local
  metadata (``read_metadata(rank=r)``, each rank planning alone), which is what ``dcp.load``
  falls back to when the first raises. Each way loads exactly or raises: a load that fills
  only the part one rank's metadata lists is a violation.
- **Plan caching** (``DefaultSavePlanner(enable_plan_caching=True)``): saves in a row whose
  state dict keeps its structure and then changes it round-trip exactly each time.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import pytest
import torch
from hypothesis import event, given, note
from hypothesis import strategies as st
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from spec_tests import strategies as sts
from spec_tests.backends import Backend
from spec_tests.contract.verdicts import may_refuse
from spec_tests.plugin.profiles import few
from spec_tests.properties.checks import (
    Location,
    check_entry,
    check_load,
    claimed,
    draw_tensor,
    request_for,
)
from spec_tests.sim import harness, shardings

__all__ = ["ProductionSaveProperties"]

#: Dtypes torch's own DefaultSavePlanner can size (its dedup calls _element_size, which
#: raises for the bits and some float8 dtypes: a torch limit, not the backend's).
_PLANNER_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.uint8)
_PLANNERS = itertools.count()


def _caching_planner_class() -> type[DefaultSavePlanner]:
    # torch caches plans per planner class *name*: a fresh class per example keeps examples
    # (and backends, and tests) from replaying each other's plans.
    return type(f"SpecCachingPlanner{next(_PLANNERS)}", (DefaultSavePlanner,), {})


def _torch_save(
    backend: Backend, location: str, state: dict[str, Any], planner: type[DefaultSavePlanner]
) -> None:
    writer = backend.make_writer(location)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        harness.call(
            "dcp.save",
            dcp_save,
            state,
            checkpoint_id=location,
            storage_writer=writer,
            planner=planner(enable_plan_caching=True),
            no_dist=True,
        )


class ProductionSaveProperties:
    """Collective-free saves and plan caching."""

    @pytest.mark.dcp_requires("multi-rank", "reshard")
    @few(10)
    @given(data=st.data())
    def test_collective_free_save_loads_exactly_or_refuses(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Rows saved by N ranks without collectives load whole on M ranks, or raise.

        Both ways (global metadata; rank-local metadata) must be exact or refused; a load
        that fills only what one rank's metadata lists is a partial load, a violation.
        """
        ranks = data.draw(st.integers(2, 4), label="save ranks")
        rest = data.draw(sts.shapes(max_dims=1).filter(lambda s: 0 not in s), label="other dims")
        value = draw_tensor(data, dcp_backend, shape=(ranks + 1, *rest))
        load_ranks = data.draw(st.integers(1, 3), label="load ranks")
        location = dcp_location()
        rows = tuple(map(tuple, shardings.row_shards(value.shape, ranks)))
        shards = harness.shard(value, rows)
        states = [{} if held is None else {"t": held} for held in shards]
        with harness.repro(dcp_backend, dtype=value.dtype, ranks=ranks, load_ranks=load_ranks):
            with may_refuse("a collective-free save") as saving:
                harness.save(dcp_backend, location, states, collectives=False)
            if saving.refused:
                note(f"the collective-free save was refused: {saving.error!r}")
                event("collective-free save refused")
                return
            for collectives in (True, False):
                way = "global metadata" if collectives else "rank-local metadata"
                requests = [{"t": request_for(value)}] * load_ranks
                with may_refuse(f"loading a collective-free checkpoint with {way}") as loading:
                    got = harness.load(dcp_backend, location, requests, collectives=collectives)
                if loading.refused:
                    note(f"loading with {way} was refused: {loading.error!r}")
                    event(f"load with {way} refused")
                    continue
                for rank, loaded in enumerate(got):
                    check_entry(f"t on load rank {rank} ({way})", loaded["t"], value)

    @few(10)
    @given(data=st.data())
    def test_plan_caching_round_trips(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """dcp.save with a caching DefaultSavePlanner: the same structure twice, then changed.

        Each save goes to its own location and must load exactly: the second replays the
        cached plan with new values, the third has an entry added and one reshaped.
        """
        allowed = [d for d in claimed(dcp_backend) if d in _PLANNER_DTYPES]
        if not allowed:
            pytest.skip(f"backend {dcp_backend.name!r} claims none of {_PLANNER_DTYPES}")
        row = data.draw(sts.dtypes(allowed=allowed), label="dtype")
        shape = data.draw(sts.shapes(min_dims=1, max_dims=2), label="shape")
        first = {
            "a": data.draw(sts.tensor_values(row, shape), label="a"),
            "b": data.draw(sts.tensor_values(row, (3,)), label="b"),
        }
        second = {k: data.draw(sts.tensor_values(row, tuple(v.shape))) for k, v in first.items()}
        third = {
            "a": data.draw(sts.tensor_values(row, (*shape[:-1], shape[-1] + 1)), label="a'"),
            "b": second["b"],
            "c": data.draw(sts.tensor_values(row, (2,)), label="c"),
        }
        planner = _caching_planner_class()
        with harness.repro(dcp_backend, dtype=row.name, shape=shape):
            for step, state in enumerate((first, second, third, first)):
                location = dcp_location()
                _torch_save(dcp_backend, location, state, planner)
                note(f"save {step} committed")
                check_load(dcp_backend, location, state)
