"""Spec section 7, nightly: sizes past 32-bit offsets (a tensor over 2 GiB, a file over 4 GiB).

These run under the ``dcp-nightly`` profile only (each moves several GiB) and skip,
saying why, when the machine lacks the memory or the disk for them. Their cases are fixed,
never drawn (:mod:`.large`): a failure must not be shrunk through GiB-sized replays.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from hypothesis import settings

from dcp_impl.dtypes import DtypeInfo, by_torch
from spec_tests.backends import Backend
from spec_tests.properties.checks import Location, claimed, roundtrip
from spec_tests.properties.large import large_pattern
from spec_tests.sim import harness
from spec_tests.sim.locations import is_url

__all__ = ["HugeProperties"]

GIB = 1 << 30
# Past a signed 32-bit byte count: an int32 size or offset anywhere on the path overflows.
OVER_2_GIB = 2 * GIB + 4096
# Headroom: the value, the loaded copy, and whatever the backend buffers on the way.
_MEMORY_FACTOR = 3
_DISK_FACTOR = 1.25


def _require_nightly() -> None:
    if settings.get_current_profile_name() != "dcp-nightly":
        pytest.skip("moves several GiB: runs under --hypothesis-profile=dcp-nightly only")


def _available_memory() -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _require_room(location: str, nbytes: int) -> None:
    memory = _available_memory()
    if memory < _MEMORY_FACTOR * nbytes:
        pytest.skip(
            f"needs {_MEMORY_FACTOR * nbytes / GIB:.1f} GiB of free memory, "
            f"{memory / GIB:.1f} GiB available"
        )
    if is_url(location):
        pytest.skip("free space of a URL root cannot be checked: run it on a local --dcp-root")
    disk = shutil.disk_usage(location).free
    if disk < _DISK_FACTOR * nbytes:
        where = os.path.dirname(location)
        pytest.skip(
            f"needs {_DISK_FACTOR * nbytes / GIB:.1f} GiB of free disk at {where}, "
            f"{disk / GIB:.1f} GiB free"
        )


def _wide(backend: Backend) -> DtypeInfo:
    """A claimed dtype whose every bit pattern is a valid value (not bool)."""
    rows = [by_torch(d) for d in claimed(backend) if d is not torch.bool]
    if not rows:
        pytest.skip(f"backend {backend.name!r} claims only bool")
    return min(rows, key=lambda row: (row.itemsize, row.name != "uint8"))


class HugeProperties:
    """Nightly: one tensor over 2 GiB, and one rank's stored data over 4 GiB."""

    def test_tensor_over_2_gib(self, dcp_backend: Backend, dcp_location: Location) -> None:
        """A tensor of more than 2 GiB round-trips exactly (no 32-bit sizes or offsets)."""
        _require_nightly()
        location = dcp_location()
        _require_room(location, OVER_2_GIB)
        value = large_pattern(OVER_2_GIB, _wide(dcp_backend).torch_dtype, seed=1)
        with harness.repro(dcp_backend, dtype=value.dtype, numel=value.numel()):
            roundtrip(dcp_backend, location, {"huge": value})

    def test_rank_data_over_4_gib(self, dcp_backend: Backend, dcp_location: Location) -> None:
        """Two tensors of over 2 GiB from one rank round-trip exactly.

        Where a backend writes one file per rank, that file is past 4 GiB.
        """
        _require_nightly()
        location = dcp_location()
        _require_room(location, 2 * OVER_2_GIB)
        row = _wide(dcp_backend)
        state = {
            "first": large_pattern(OVER_2_GIB, row.torch_dtype, seed=1),
            "second": large_pattern(OVER_2_GIB, row.torch_dtype, seed=-(OVER_2_GIB // 8) - 1),
        }
        with harness.repro(dcp_backend, dtype=row.name):
            roundtrip(dcp_backend, location, state)
