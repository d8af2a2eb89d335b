"""Resource faults: open-file limits, a full disk, permissions, the umask, missing buckets.

Each becomes a typed CheckpointError naming the file and saying what to do, and leaves the
previous checkpoint intact (docs/format.md, "Faults").
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

import dcp_impl
from dcp_impl.errors import CheckpointError, StorageFaultError
from dcp_impl.store import atomic_write, storage_fault

_MANY_FILES = """
import resource, sys, torch
from torch.distributed.checkpoint.state_dict_loader import load
import dcp_impl
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
state = {f"t{i}": torch.zeros(4) for i in range(1100)}
load(state, storage_reader=dcp_impl.FileSystemReader(sys.argv[1]), no_dist=True)
assert all(bool((state[f"t{i}"] == i).all()) for i in range(1100))
print("loaded", len(state))
"""


def test_more_files_than_the_open_file_limit_load(tmp_path: Path) -> None:
    state = {f"t{i}": torch.full((4,), float(i)) for i in range(1100)}
    writer = dcp_impl.FileSystemWriter(tmp_path, thread_count=1100)  # one file per tensor
    dcp_save(state, storage_writer=writer, no_dist=True)
    assert len(list(tmp_path.glob("*.bin"))) == 1100
    done = subprocess.run(
        [sys.executable, "-c", _MANY_FILES, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded 1100" in done.stdout


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EMFILE, errno.EACCES])
def test_storage_faults_name_the_file_and_what_to_do(code: int) -> None:
    fault = storage_fault(OSError(code, os.strerror(code)), "/ckpt/data-0.bin", "writing")
    assert isinstance(fault, StorageFaultError)
    assert isinstance(fault, CheckpointError)
    assert isinstance(fault, OSError)
    assert fault.errno == code
    message = str(fault)
    assert message.startswith("/ckpt/data-0.bin: writing failed")
    assert any(word in message for word in ("free space", "ulimit", "permissions"))


def test_other_os_errors_pass_unchanged() -> None:
    err = OSError(errno.EIO, "I/O error")
    assert storage_fault(err, "/x", "reading") is err


@pytest.fixture
def umask_002() -> Iterator[None]:
    previous = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("umask_002")
@pytest.mark.parametrize("writer", [dcp_impl.FileSystemWriter, dcp_impl.HuggingFaceWriter])
def test_files_are_created_honouring_the_umask(writer: type, tmp_path: Path) -> None:
    dcp_save({"t": torch.ones(3)}, storage_writer=writer(tmp_path), no_dist=True)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o664, path


@pytest.mark.usefixtures("umask_002")
def test_atomic_write_honours_the_umask(tmp_path: Path) -> None:
    atomic_write(tmp_path / "small.json", b"{}")
    assert (tmp_path / "small.json").stat().st_mode & 0o777 == 0o664


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs; skips where mounting is not allowed (needs root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError as err:
        pytest.skip(f"a full disk needs a small tmpfs: cannot run mount ({err})")
    if done.returncode != 0:
        pytest.skip(f"a full disk needs a small tmpfs (root): mount said {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


def _errnos(err: BaseException) -> list[int | None]:
    found: list[int | None] = []
    seen: BaseException | None = err
    while seen is not None:
        found.append(getattr(seen, "errno", None))
        seen = seen.__cause__ or seen.__context__
    return found


@pytest.mark.parametrize("writer", [dcp_impl.FileSystemWriter, dcp_impl.HuggingFaceWriter])
def test_full_disk_is_typed_and_keeps_the_previous_checkpoint(
    writer: type, small_disk: Path
) -> None:
    ckpt = small_disk / "ckpt"
    dcp_save({"t": torch.arange(16.0)}, storage_writer=writer(ckpt), no_dist=True)
    before = sorted(p.name for p in ckpt.iterdir())
    big = {f"b{i}": torch.ones(16 << 10) for i in range(16)}  # 1 MiB: more than the disk
    with pytest.raises(CheckpointException) as info:
        dcp_save(big, storage_writer=writer(ckpt), no_dist=True)
    text = str(info.value)
    assert "StorageFaultError" in text
    assert "No space left on device" in text
    assert f"{ckpt}/" in text
    assert "free space" in text
    assert sorted(p.name for p in ckpt.iterdir()) == before  # nothing left behind
    fs = writer is dcp_impl.FileSystemWriter
    reader = dcp_impl.FileSystemReader(ckpt) if fs else dcp_impl.HuggingFaceReader(ckpt)
    state = {"t": torch.zeros(16)}
    dcp_load(state, storage_reader=reader, no_dist=True)
    assert torch.equal(state["t"], torch.arange(16.0))


def test_s3_save_never_creates_a_bucket(dcp_local_s3: object) -> None:
    s3fs = pytest.importorskip("s3fs")
    url = "s3://no-such-bucket-typo/run/step-1"
    writer = dcp_impl.FileSystemWriter(url)
    with pytest.raises(CheckpointException) as info:
        dcp_save({"t": torch.ones(2)}, storage_writer=writer, no_dist=True)
    assert "expected the bucket 'no-such-bucket-typo' to exist" in str(info.value)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert not fs.exists("no-such-bucket-typo")


def test_missing_bucket_is_a_storage_fault(dcp_local_s3: object) -> None:
    pytest.importorskip("s3fs")
    store = dcp_impl.store.open_store("s3://no-such-bucket-typo/run")
    with pytest.raises(StorageFaultError, match="saves never create buckets") as info:
        store.make_dirs()
    assert info.value.errno == errno.ENOENT
    assert errno.ENOENT in _errnos(info.value)
