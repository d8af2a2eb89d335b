"""dcp_impl.transfer.DeviceReadable: a source that fills device memory itself is asked to, and only
where no host bytes are needed (meta tensors stand in for CUDA ones on a CPU machine)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch

from dcp_impl import transfer
from dcp_impl.errors import CorruptCheckpointError
from dcp_impl.layout import Box
from dcp_impl.store import DataFileWriter, LocalFile

CHUNK = torch.arange(48, dtype=torch.float32).reshape(6, 8)


class RecordingSource(LocalFile):
    """A local file that also claims device reads, recording each request."""

    asked: ClassVar[list[tuple[str, tuple[int, ...], int]]] = []
    short_by: ClassVar[int] = 0

    def read_to_device(self, dest: torch.Tensor, offset: int) -> int:
        RecordingSource.asked.append((dest.device.type, tuple(dest.shape), offset))
        return dest.numel() * dest.element_size() - RecordingSource.short_by


@pytest.fixture
def stored(tmp_path: Path) -> tuple[str, transfer.StoredRange]:
    RecordingSource.asked, RecordingSource.short_by = [], 0
    path = tmp_path / "d.bin"
    with DataFileWriter(path, sync=False) as out:
        out.write_bytes(b"head")
        item = out.write_tensor(CHUNK)
    return str(path), item


def _read(stored: tuple[str, transfer.StoredRange], sub: Box, *, verify: bool) -> torch.Tensor:
    path, item = stored
    dest = torch.empty(sub.sizes, dtype=torch.float32, device="meta")
    target = transfer.Target(sub, dest)
    request = transfer.ReadRequest(
        path, item.offset, item.length, (6, 8), torch.float32, (target,), item.checksum
    )
    transfer.read_into([request], verify=verify, opener=RecordingSource)
    return dest


def test_an_exact_span_is_read_by_the_source_into_device_memory(
    stored: tuple[str, transfer.StoredRange],
) -> None:
    _read(stored, Box((2, 0), (3, 8)), verify=False)
    assert RecordingSource.asked == [("meta", (3, 8), 4 + 2 * 8 * 4)]


def test_what_needs_host_bytes_is_staged(stored: tuple[str, transfer.StoredRange]) -> None:
    _read(stored, Box((0, 0), (6, 8)), verify=True)  # the checksum is computed on the host
    _read(stored, Box((0, 2), (6, 3)), verify=False)  # columns: several runs
    assert RecordingSource.asked == []


def test_a_short_device_read_is_truncation(stored: tuple[str, transfer.StoredRange]) -> None:
    RecordingSource.short_by = 4
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        _read(stored, Box((0, 0), (6, 8)), verify=False)
