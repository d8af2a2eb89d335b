"""Files are what they claim to be: links out of the checkpoint, special files, files longer
than declared and hostile sizes are refused with typed errors naming the file (docs/security.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

import dcp_impl
from dcp_impl.errors import CheckpointError, CorruptCheckpointError, UnsafeFileError
from dcp_impl.store import LocalStore, open_regular, read_at_most

VALUE = torch.arange(12, dtype=torch.float32)
KINDS = {
    "fs": (dcp_impl.FileSystemWriter, dcp_impl.FileSystemReader, ".metadata.json"),
    "hf": (dcp_impl.HuggingFaceWriter, dcp_impl.HuggingFaceReader, "dcp_metadata.json"),
}


def _save(kind: str, path: Path) -> Path:
    writer, _, _ = KINDS[kind]
    dcp_save({"t": VALUE}, storage_writer=writer(path), no_dist=True)
    return path


def _load(kind: str, path: Path) -> torch.Tensor:
    _, reader, _ = KINDS[kind]
    state = {"t": torch.zeros_like(VALUE)}
    dcp_load(state, storage_reader=reader(path), no_dist=True)
    return state["t"]


def _data_file(path: Path) -> Path:
    return next(p for p in sorted(path.iterdir()) if p.suffix in (".bin", ".safetensors"))


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    path.unlink()
    make(path)


def _refusal(kind: str, path: Path) -> str:
    """The load's failure, as torch reports a reader's exception (its text)."""
    with pytest.raises(CheckpointException) as info:
        _load(kind, path)
    return str(info.value)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_data_file_linked_out_of_the_checkpoint_is_refused(kind: str, tmp_path: Path) -> None:
    ckpt = _save(kind, tmp_path / "ckpt")
    data = _data_file(ckpt)
    outside = tmp_path / "secret"
    outside.write_bytes(data.read_bytes())  # the same bytes: only the link gives it away
    _replace(data, lambda p: p.symlink_to(outside))
    assert f"{data}: expected a file inside the checkpoint" in _refusal(kind, ckpt)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_metadata_linked_to_dev_zero_is_refused(kind: str, tmp_path: Path) -> None:
    ckpt = _save(kind, tmp_path / "ckpt")
    metadata = ckpt / KINDS[kind][2]
    _replace(metadata, lambda p: p.symlink_to("/dev/zero"))
    assert "found a link to /dev/zero" in _refusal(kind, ckpt)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("which", ["data", "metadata"])
def test_fifo_is_refused_without_blocking(kind: str, which: str, tmp_path: Path) -> None:
    ckpt = _save(kind, tmp_path / "ckpt")
    target = _data_file(ckpt) if which == "data" else ckpt / KINDS[kind][2]
    _replace(target, os.mkfifo)
    assert f"{target}: expected a regular file, found a FIFO" in _refusal(kind, ckpt)


def test_directory_in_place_of_a_data_file_is_refused(tmp_path: Path) -> None:
    ckpt = _save("fs", tmp_path / "ckpt")
    data = _data_file(ckpt)
    _replace(data, lambda p: p.mkdir())
    assert f"{data}: expected a regular file, found a directory" in _refusal("fs", ckpt)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_link_inside_the_checkpoint_is_followed(kind: str, tmp_path: Path) -> None:
    ckpt = _save(kind, tmp_path / "ckpt")
    data = _data_file(ckpt)
    moved = ckpt / "sub" / "moved"
    moved.parent.mkdir()
    data.rename(moved)
    data.symlink_to(moved)
    assert torch.equal(_load(kind, ckpt), VALUE)


def test_checkpoint_folder_reached_through_a_link_loads(tmp_path: Path) -> None:
    ckpt = _save("fs", tmp_path / "step-10")
    (tmp_path / "latest").symlink_to(ckpt)  # a common layout: latest -> step-N
    assert torch.equal(_load("fs", tmp_path / "latest"), VALUE)


def test_hf_file_longer_than_its_header_declares_is_refused(tmp_path: Path) -> None:
    ckpt = _save("hf", tmp_path / "ckpt")
    data = _data_file(ckpt)
    with data.open("ab") as f:
        f.write(b"\0")
    assert "found a file of" in _refusal("hf", ckpt)


def test_fs_data_file_longer_than_written_loads_exactly(tmp_path: Path) -> None:
    ckpt = _save("fs", tmp_path / "ckpt")
    with _data_file(ckpt).open("ab") as f:
        f.write(b"\xff" * 4096)
    assert torch.equal(_load("fs", ckpt), VALUE)  # only the declared ranges are read


def test_read_small_reads_at_most_one_byte_past_the_limit(tmp_path: Path) -> None:
    (tmp_path / "big.json").write_bytes(b"x" * 1000)
    fd = open_regular(str(tmp_path / "big.json"), root=tmp_path)
    try:
        assert read_at_most(fd, 11) == b"x" * 11
    finally:
        os.close(fd)
    with pytest.raises(CheckpointError, match="expected at most 10 bytes"):
        LocalStore(tmp_path).read_small("big.json", 10)


def test_store_size_and_ranges_refuse_links_out(tmp_path: Path) -> None:
    (tmp_path / "outside").write_bytes(b"secret")
    root = tmp_path / "ckpt"
    root.mkdir()
    (root / "f").symlink_to(tmp_path / "outside")
    store = LocalStore(root)
    for read in (lambda: store.size("f"), lambda: store.read_range("f", 0, 3)):
        with pytest.raises(UnsafeFileError, match=r"/f: expected a file inside the checkpoint"):
            read()


def test_hostile_bytes_length_is_a_typed_error(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    dcp_save({"t": VALUE, "extra": {"x": 1}}, storage_writer=dcp_impl.FileSystemWriter(ckpt))
    doc = json.loads((ckpt / ".metadata.json").read_text())
    index = doc["storage_data"]["chunk"].index(None)  # the bytes entry's row
    doc["storage_data"]["length"][index] = 2**62
    (ckpt / ".metadata.json").write_text(json.dumps(doc))
    reader = dcp_impl.FileSystemReader(ckpt)
    with pytest.raises(CheckpointException) as info:
        dcp_load({"t": torch.zeros(12), "extra": {"x": 0}}, storage_reader=reader, no_dist=True)
    assert CorruptCheckpointError.__name__ in str(info.value)
    assert "declares 4611686018427387904 bytes" in str(info.value)


def _cli(command: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dcp_impl", command, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_cli_reports_special_metadata_without_a_traceback(command: str, tmp_path: Path) -> None:
    ckpt = _save("fs", tmp_path / "ckpt")
    _replace(ckpt / ".metadata.json", os.mkfifo)
    done = _cli(command, ckpt)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "expected a regular file, found a FIFO" in done.stderr


def test_cli_verify_never_allocates_what_the_file_cannot_hold(tmp_path: Path) -> None:
    ckpt = _save("fs", tmp_path / "ckpt")
    doc = json.loads((ckpt / ".metadata.json").read_text())
    entry = doc["state_dict_metadata"]["t"]
    entry["size"], entry["chunks"]["size_table"] = [2**40], [[2**40]]
    doc["storage_data"]["length"][0] = 2**42
    (ckpt / ".metadata.json").write_text(json.dumps(doc))
    done = _cli("verify", ckpt)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    expected = "is truncated: expected bytes up to 4398046511104, found end of file at 48"
    assert expected in done.stderr
