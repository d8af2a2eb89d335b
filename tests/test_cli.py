"""Tests of ``python -m dcp_impl inspect|verify``."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from dcp_impl.__main__ import main
from dcp_impl.filesystem import METADATA_FILE, FileSystemWriter
from dcp_impl.huggingface import HuggingFaceWriter
from spec_tests.properties.hostile import Payload, mark


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    sd = {
        "layer.weight": torch.ones(4, 8, dtype=torch.bfloat16),
        "step": torch.tensor(3),
        "blob": io.BytesIO(b"12345"),
    }
    dcp_save(sd, storage_writer=FileSystemWriter(tmp_path), no_dist=True)
    return tmp_path


def _data_file(path: Path) -> Path:
    (data,) = [p for p in path.iterdir() if p.name.startswith("data-")]
    return data


def test_inspect_lists_entries_and_totals(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(checkpoint)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:-1]}
    assert rows["layer.weight"] == ["bfloat16", "(4,", "8)", "1", "64"]
    assert rows["step"] == ["int64", "()", "1", "8"]
    assert rows["blob"][:3] == ["bytes", "-", "1"]  # dcp stores the torch.save of the object
    blob = int(rows["blob"][3])
    assert lines[-1] == f"total: 2 tensors, 1 byte entries, 3 stored items, {72 + blob} bytes"


def test_verify_accepts_a_good_checkpoint(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(checkpoint)]) == 0
    assert capsys.readouterr().out.startswith("OK:")


def test_verify_names_the_corrupt_item(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data_file(checkpoint)
    raw = bytearray(data.read_bytes())
    raw[3] ^= 0xFF  # inside the first item written (largest first: layer.weight)
    data.write_bytes(bytes(raw))
    assert main(["verify", str(checkpoint)]) == 1
    out = capsys.readouterr()
    assert "FAILED" in out.out
    (problem,) = out.err.splitlines()
    assert data.name in problem
    assert "'layer.weight'" in problem
    assert "checksum" in problem


def test_verify_reports_truncation_and_missing_files(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data_file(checkpoint)
    os.truncate(data, data.stat().st_size - 2)
    assert main(["verify", str(checkpoint)]) == 1
    assert "truncated" in capsys.readouterr().err
    data.unlink()
    assert main(["verify", str(checkpoint)]) == 1
    assert len(capsys.readouterr().err.splitlines()) == 3  # every item names the missing file


def test_verify_reports_coverage_holes(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = checkpoint / METADATA_FILE
    text = meta.read_text().replace('"size":[4,8]', '"size":[5,8]')
    assert text != meta.read_text()  # the test must change the stored shape
    meta.write_text(text)
    assert main(["verify", str(checkpoint)]) == 1
    assert "metadata:" in capsys.readouterr().err


def test_not_a_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path)]) == 2
    assert METADATA_FILE in capsys.readouterr().err
    (tmp_path / METADATA_FILE).write_text("{not json")
    assert main(["verify", str(tmp_path)]) == 2


def test_runs_as_a_module(checkpoint: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dcp_impl", "verify", str(checkpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK:")


# --------------------------------------------------------------------------- HuggingFace folders


@pytest.fixture
def hf_folder(tmp_path: Path) -> Path:
    """A folder written by dcp_impl's HuggingFaceWriter (safetensors + sidecar checksums)."""
    sd = {
        "layer.weight": torch.arange(32, dtype=torch.float32).reshape(4, 8).bfloat16(),
        "step": torch.tensor(3),
    }
    dcp_save(sd, storage_writer=HuggingFaceWriter(tmp_path), no_dist=True)
    return tmp_path


def _data_offsets(file: Path) -> dict[str, tuple[int, int]]:
    """Absolute byte range of each tensor in a safetensors file, from its header."""
    raw = file.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    return {
        name: (8 + size + entry["data_offsets"][0], 8 + size + entry["data_offsets"][1])
        for name, entry in header.items()
        if name != "__metadata__"
    }


def test_inspect_and_verify_our_hf_folder(
    hf_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(hf_folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "huggingface safetensors checkpoint"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:-1]}
    assert rows == {
        "layer.weight": ["bfloat16", "(4,", "8)", "1", "64"],
        "step": ["int64", "()", "1", "8"],
    }
    assert lines[-1] == "total: 2 tensors, 0 byte entries, 2 stored items, 72 bytes"
    assert main(["verify", str(hf_folder)]) == 0
    assert capsys.readouterr().out.startswith("OK: huggingface safetensors checkpoint, 2 items")


def test_inspect_and_verify_a_save_file_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tensors = {"a.w": torch.ones(3, 5, dtype=torch.float16), "b": torch.zeros(2, dtype=torch.int8)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    assert main(["inspect", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:-1]}
    assert rows == {"a.w": ["float16", "(3,", "5)", "1", "30"], "b": ["int8", "(2,)", "1", "2"]}
    assert lines[-1] == "total: 2 tensors, 0 byte entries, 2 stored items, 32 bytes"
    assert main(["verify", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("OK: huggingface safetensors checkpoint, 2 items")


def test_verify_names_the_corrupt_item_of_an_hf_folder(
    hf_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data,) = hf_folder.glob("*.safetensors")
    start, end = _data_offsets(data)["layer.weight"]
    raw = bytearray(data.read_bytes())
    raw[(start + end) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    assert main(["verify", str(hf_folder)]) == 1
    out = capsys.readouterr()
    assert out.out.startswith("FAILED: huggingface safetensors checkpoint, 2 items, 1 problems")
    (problem,) = out.err.splitlines()
    assert data.name in problem
    assert "'layer.weight'" in problem
    assert "checksum" in problem


def test_hf_folder_runs_as_a_module(hf_folder: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dcp_impl", "verify", str(hf_folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK: huggingface safetensors checkpoint")


# --------------------------------------------------------------------------- untrusted entries


@pytest.fixture(params=[FileSystemWriter, HuggingFaceWriter], ids=["fs", "hf"])
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint with a plain bytes entry and one whose unpickling would run code."""
    folder, marker = tmp_path / "ckpt", tmp_path / "payload-ran"
    sd = {"w": torch.ones(3), "step": 7, "evil": Payload(str(marker))}  # unpickling runs mark()
    dcp_save(sd, storage_writer=request.param(folder), no_dist=True)
    return folder, marker


def test_verify_warns_about_entries_that_need_the_opt_in(
    hostile: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, marker = hostile
    assert main(["verify", str(folder)]) == 0
    out = capsys.readouterr()
    (warning,) = out.err.splitlines()
    assert warning.startswith("WARNING: bytes entry 'evil'")
    assert f"{mark.__module__}.mark" in warning
    assert "trust_pickle=True" in warning
    assert out.out.startswith("OK: ")
    assert out.out.rstrip().endswith("0 problems, 1 entries need trust_pickle or safe_globals")
    assert not marker.exists()


def test_verify_untrusted_fails_on_entries_that_need_the_opt_in(
    hostile: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, marker = hostile
    assert main(["verify", "--untrusted", str(folder)]) == 1
    out = capsys.readouterr()
    assert out.out.startswith("FAILED: ")
    assert len(out.err.splitlines()) == 1
    assert not marker.exists()


def test_verify_untrusted_accepts_plain_entries(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--untrusted", str(checkpoint)]) == 0  # its blob is a BytesIO
    out = capsys.readouterr()
    assert out.out.startswith("OK:")
    assert out.err == ""


def test_untrusted_runs_as_a_module(hostile: tuple[Path, Path]) -> None:
    folder, marker = hostile
    done = subprocess.run(
        [sys.executable, "-m", "dcp_impl", "verify", "--untrusted", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "WARNING: bytes entry 'evil'" in done.stderr
    assert not marker.exists()
