"""docs/examples/: the worked examples run, so the docs cannot rot."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"dcp_docs_example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


one_file = _example("one_file_backend")


def test_one_file_backend_is_under_100_lines() -> None:
    backend = (EXAMPLES / "one_file_backend.py").read_text().split("\nif __name__ ==")[0]
    assert len(backend.rstrip().splitlines()) < 100  # the backend; its demo follows


def test_one_file_backend_prints_what_it_shows_when_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "one_file_backend.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout + done.stderr
    assert lines[0].startswith("saved ['step', 'w'] to ")
    assert lines[0].endswith("metadata.json")
    assert ".bin" in lines[0]
    assert lines[1] == "loaded back: w=[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] step=3"
    assert lines[2] == "round trip exact: True"


def _state() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(5)
    return {
        "w": torch.randn(16, 8, generator=gen).to(torch.bfloat16),
        "mask": torch.rand(5, generator=gen) > 0.5,
        "blob": io.BytesIO(b"not a tensor"),
        "step": 3,
    }


@pytest.mark.parametrize("where", ["local", "memory"])
def test_one_file_backend_round_trips(tmp_path: Path, where: str) -> None:
    path = str(tmp_path / "ckpt") if where == "local" else f"memory://examples/{tmp_path.name}"
    state = _state()
    dcp_save(state, storage_writer=one_file.OneFileWriter(path), no_dist=True)
    loaded: dict[str, Any] = {
        "w": torch.zeros(16, 8, dtype=torch.bfloat16),
        "mask": torch.zeros(5, dtype=torch.bool),
        "blob": io.BytesIO(),
        "step": 0,
    }
    dcp_load(loaded, storage_reader=one_file.OneFileReader(path), no_dist=True)
    assert torch.equal(loaded["w"], state["w"])
    assert torch.equal(loaded["mask"], state["mask"])
    assert loaded["blob"].getvalue() == b"not a tensor"
    assert loaded["step"] == 3


def test_one_file_backend_verifies_checksums(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    dcp_save({"w": torch.arange(64.0)}, storage_writer=one_file.OneFileWriter(path), no_dist=True)
    data = next(path.glob("*.bin"))
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF
    data.write_bytes(bytes(raw))
    # DCP wraps the rank's CorruptCheckpointError, whose text it keeps.
    with pytest.raises(CheckpointException, match=r"CorruptCheckpointError.*fails its checksum"):
        dcp_load({"w": torch.zeros(64)}, storage_reader=one_file.OneFileReader(path), no_dist=True)


pytest_plugins = ["pytester"]

_RESHARD_KIT = """
import importlib.util
import sys

import pytest

from spec_tests.properties.resharding import ReshardingProperties

spec = importlib.util.spec_from_file_location("one_file_backend", {path!r})
one_file = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = one_file
spec.loader.exec_module(one_file)


class OneFileBackend:
    name = "docs-example-one-file"
    capabilities = None

    def make_writer(self, path):
        return one_file.OneFileWriter(path)

    def make_reader(self, path):
        return one_file.OneFileReader(path)


class TestOneFileBackendReshards(ReshardingProperties):
    @pytest.fixture(scope="class")
    def dcp_backend(self):
        return OneFileBackend()
"""


def test_one_file_backend_reshards(pytester: pytest.Pytester) -> None:
    """Every resharding property of the conformance suite holds for the example: any save
    layout over N ranks loads into any other over M, through dcp_impl.transfer.read_items."""
    pytester.makepyfile(
        test_reshard_kit=_RESHARD_KIT.format(path=str(EXAMPLES / "one_file_backend.py"))
    )
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--hypothesis-profile=dcp-ci", "-W", "ignore", "-q"
    )
    result.assert_outcomes(passed=7)
