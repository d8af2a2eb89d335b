"""Spec section 6: the properties hold with real processes (gloo on CPU, DTensor, dcp.save/load).

Each case runs ``world`` ranks of a gloo group (``spec_tests.sim.ranks.run_ranks``) that
rebuild the backend from its SPEC string (``spec_tests.backends.load_backend``), save a
DTensor with one placement through ``dcp.save`` and load it with another through
``dcp.load``. A rank's verdict is what it reports: an abort after it reported success
(gloo's teardown, pytorch/pytorch#179291) is not a failure.
"""

from __future__ import annotations

import pytest
import torch

from spec_tests.backends import Backend, claimed_dtypes, load_backend
from spec_tests.sim import harness
from spec_tests.sim.ranks import run_ranks

__all__ = ["MultiprocessProperties"]

# (world size, save placement, load placement, shape): uneven shapes on purpose.
_SAME = [(2, "shard0", "shard0", (7, 5))]
_RESHARD = [(2, "shard1", "shard0", (5, 7))]


class MultiprocessProperties:
    """DTensor checkpoints saved and loaded by real gloo process groups."""

    @pytest.mark.dcp_requires("multiprocess", "multi-rank")
    @pytest.mark.parametrize("case", _SAME, ids=lambda c: f"{c[0]}ranks-{c[1]}-{c[2]}")
    def test_dtensor_same_placement(
        self,
        dcp_backend: Backend,
        dcp_backend_spec: str,
        dcp_location: object,
        case: tuple[int, str, str, tuple[int, int]],
    ) -> None:
        """A sharded DTensor saved from N processes loads back into the same placement."""
        _run(dcp_backend, dcp_backend_spec, dcp_location, case)

    @pytest.mark.dcp_requires("multiprocess", "multi-rank", "reshard")
    @pytest.mark.parametrize("case", _RESHARD, ids=lambda c: f"{c[0]}ranks-{c[1]}-{c[2]}")
    def test_dtensor_reshard(
        self,
        dcp_backend: Backend,
        dcp_backend_spec: str,
        dcp_location: object,
        case: tuple[int, str, str, tuple[int, int]],
    ) -> None:
        """A DTensor saved with one placement loads into another (rows -> columns -> replicas)."""
        _run(dcp_backend, dcp_backend_spec, dcp_location, case)


def _run(
    backend: Backend,
    spec: str,
    dcp_location: object,
    case: tuple[int, str, str, tuple[int, int]],
) -> None:
    if load_backend(spec).name != backend.name:
        pytest.skip(
            f"backend {backend.name!r} cannot be rebuilt in a child process from SPEC {spec!r}: "
            "override the dcp_backend_spec fixture too"
        )
    dtypes = claimed_dtypes(backend)
    dtype = torch.float32 if torch.float32 in dtypes else dtypes[0]
    world, save_pl, load_pl, shape = case
    location = dcp_location()  # type: ignore[operator]
    with harness.repro(backend, spec=spec, case=case, dtype=dtype):
        run_ranks(_save_and_load, world, spec, location, save_pl, load_pl, shape, dtype)


def _value(shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1234)
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (shape[0], shape[1] * itemsize), dtype=torch.uint8, generator=gen)
    if dtype is torch.bool:
        raw &= 1
    return raw.view(dtype)


def _save_and_load(
    rank: int,
    world: int,
    spec: str,
    location: str,
    save_pl: str,
    load_pl: str,
    shape: tuple[int, int],
    dtype: torch.dtype,
) -> None:
    from torch.distributed.checkpoint.state_dict_loader import load
    from torch.distributed.checkpoint.state_dict_saver import save
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Placement, Replicate, Shard, distribute_tensor

    placements: dict[str, Placement] = {
        "shard0": Shard(0),
        "shard1": Shard(1),
        "replicate": Replicate(),
    }
    backend = load_backend(spec)
    mesh = init_device_mesh("cpu", (world,))
    full = _value(shape, dtype)
    state = {"w": distribute_tensor(full, mesh, [placements[save_pl]])}
    save(state, storage_writer=backend.make_writer(location), checkpoint_id=location)
    empty = torch.zeros_like(full.view(torch.uint8)).view(dtype)
    dest = {"w": distribute_tensor(empty, mesh, [placements[load_pl]])}
    load(dest, storage_reader=backend.make_reader(location), checkpoint_id=location)
    want = distribute_tensor(full, mesh, [placements[load_pl]]).to_local()
    harness.assert_bit_equal(dest["w"].to_local(), want, what=f"rank {rank} local shard of 'w'")
