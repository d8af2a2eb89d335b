"""The load properties (spec_tests/properties/loads.py, docs/conformance.md section 18): they
pass conforming backends, and each kills the broken reader it was written for (the self-test
runs the whole suite on them; without these properties the suite passed
KeepsFirstCheckpointAfterReset)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from dcp_impl import FileSystemReader, FileSystemWriter
from dcp_impl.errors import LayoutMismatchError
from spec_tests.properties.loads import other_bits
from spec_tests.selftest import loads
from spec_tests.selftest.catalogue import spec_of


def _loads(backend: str, *args: str, profile: str = "dcp-ci") -> subprocess.CompletedProcess[str]:
    """The load properties on ``backend`` (a subprocess: the plugin's own settings)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "spec_tests.test_loads", "-p", "no:randomly",
         "-p", "no:cacheprovider", f"--dcp-backend={backend}", f"--hypothesis-profile={profile}",
         "-q", *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["reference", "dcp_impl-fs", "dcp_impl-hf"])
def test_the_load_properties_pass_conforming_backends(backend: str) -> None:
    run = _loads(backend)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "5 passed" in run.stdout


@pytest.mark.parametrize(
    ("broken", "killed_by"),
    [
        (loads.ReadsStoredItemsInOrder, "test_any_subset_in_any_order"),
        (loads.KeepsFirstCheckpointAfterReset, "test_one_reader_for_several_checkpoints"),
        (loads.MissingFileReadsAsZeros, "test_missing_or_empty_file_raises_or_loads_exactly"),
        (loads.ConvertsToDestinationDtype, "test_destination_of_another_dtype_raises"),
        (loads.FillsStorageFromItsStart, "test_destinations_inside_a_larger_buffer"),
    ],
)
def test_each_property_kills_its_broken_reader(broken: type, killed_by: str) -> None:
    # dcp-selftest: dcp-ci's examples without shrinking (a kill needs no minimal example).
    run = _loads(spec_of(broken), "-k", killed_by, profile="dcp-selftest")
    assert run.returncode == 1, run.stdout[-3000:]
    assert f"FAILED spec_tests/test_loads.py::TestLoads::{killed_by}" in run.stdout


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float32, torch.complex64])
def test_other_bits_changes_every_byte_and_keeps_values_valid(dtype: torch.dtype) -> None:
    value = torch.arange(12).reshape(3, 4).to(dtype)
    other = other_bits(value)
    assert (other.dtype, other.shape) == (value.dtype, value.shape)
    mine, theirs = value.view(torch.uint8), other.view(torch.uint8)
    assert bool((mine != theirs).all())
    if dtype == torch.bool:
        assert set(theirs.flatten().tolist()) <= {0, 1}


@pytest.mark.parametrize("dest", [torch.bfloat16, torch.int32, torch.float64])
def test_dcp_impl_refuses_to_convert_a_stored_dtype(tmp_path: Path, dest: torch.dtype) -> None:
    saved = {"w": torch.arange(12, dtype=torch.float32).reshape(4, 3) * 1.37}
    dcp.save(saved, storage_writer=FileSystemWriter(tmp_path), no_dist=True)
    template = {"w": torch.zeros(4, 3, dtype=dest)}
    with pytest.raises(CheckpointException) as raised:  # DCP wraps each rank's error
        dcp.load(template, storage_reader=FileSystemReader(tmp_path), no_dist=True)
    error = str(raised.value)
    assert LayoutMismatchError.__name__ in error
    assert f"expected dtype torch.float32 (the stored one), found {dest}" in error
    assert not template["w"].any()  # nothing reached the destination
