"""Verified reads of part of an item check the pieces it touches, and only those (F9)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch
from _metadata import as_version
from _reads import (
    PreadOnly,
    bytes_of,
    chunk_values,
    counting_preadv,
    read_request,
    region,
    store_chunk,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from dcp_impl import transfer
from dcp_impl.__main__ import main as cli_main
from dcp_impl.errors import CorruptCheckpointError
from dcp_impl.filesystem import METADATA_FILE, FileSystemReader, FileSystemWriter
from dcp_impl.layout import Box, byte_span
from dcp_impl.store import LocalFile
from dcp_impl.testing import tuned

PIECE = transfer.MIN_PIECE_SIZE
MODES = ["mapped", "pread", "staged"]


def _damage(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x5A
    path.write_bytes(bytes(raw))


def _read(
    path: Path, stored: transfer.StoredRange, chunk: torch.Tensor, sub: Box, mode: str
) -> torch.Tensor:
    dest = torch.zeros(sub.sizes, dtype=chunk.dtype)
    request = read_request(path, stored, chunk, transfer.Target(sub, dest))
    opener = PreadOnly if mode == "pread" else LocalFile
    with tuned(stage_all=mode == "staged"):
        transfer.read_into([request], verify=True, opener=opener)
    return dest


def _needed_bytes(chunk: torch.Tensor, sub: Box) -> set[int]:
    """The chunk-relative offsets of every byte of ``sub``'s elements."""
    index = torch.arange(chunk.numel(), dtype=torch.int64).reshape(chunk.shape)
    elements = region(index, sub).reshape(-1).tolist()
    size = chunk.dtype.itemsize
    return {e * size + i for e in elements for i in range(size)}


@st.composite
def _non_empty_sub_box(draw: st.DrawFn, shape: tuple[int, ...]) -> Box:
    offsets, sizes = [], []
    for n in shape:
        start = draw(st.integers(0, n - 1))
        offsets.append(start)
        sizes.append(draw(st.integers(1, n - start)))
    return Box(tuple(offsets), tuple(sizes))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    shape=st.sampled_from([(64, 48), (3, 40, 37), (9000,), (128, 33)]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.int64]),
    mode=st.sampled_from(MODES),
    limit=st.sampled_from([PIECE, 3 * PIECE + 1, 5 * PIECE]),  # fixed and balanced pieces
)
def test_damage_fails_a_read_exactly_where_the_read_touches_it(
    tmp_path: Path,
    data: st.DataObject,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    mode: str,
    limit: int,
) -> None:
    chunk = chunk_values(shape, dtype, seed=len(shape))
    path = tmp_path / f"{uuid.uuid4().hex}.bin"  # tmp_path is shared by all examples
    stored = store_chunk(path, chunk, piece_size=limit)
    size = transfer.piece_size_for(stored.length, limit)
    one_piece = stored.length <= limit
    assert stored.checksum.startswith("xxh3_64:" if one_piece else f"xxh3_64@{size}:")
    sub = data.draw(_non_empty_sub_box(shape), label="sub")
    damaged = data.draw(st.integers(0, stored.length - 1), label="damaged byte")
    _damage(path, stored.offset + damaged)
    start, length, _ = byte_span(shape, sub, dtype.itemsize)
    piece = range(damaged // size * size, (damaged // size + 1) * size)
    if not _needed_bytes(chunk, sub).isdisjoint(piece):
        event("damage in a piece the read needs")
        which = "" if one_piece else r"piece \d+ of \d+\) "
        with pytest.raises(CorruptCheckpointError, match=which + "fails its checksum"):
            _read(path, stored, chunk, sub, mode)
    elif piece.stop <= start or start + length <= piece.start:
        event("damage in a piece outside the read's span")
        assert bytes_of(_read(path, stored, chunk, sub, mode)) == bytes_of(region(chunk, sub))
    else:
        event("damage between the read's runs")


@pytest.mark.parametrize("mode", MODES)
def test_a_whole_read_checks_every_piece(tmp_path: Path, mode: str) -> None:
    chunk = chunk_values((40, 1000), torch.float32)
    path = tmp_path / "d.bin"
    stored = store_chunk(path, chunk, piece_size=PIECE)
    _damage(path, stored.offset + stored.length - 1)
    full = Box.full(chunk.shape)
    with pytest.raises(CorruptCheckpointError, match=r"piece 39 of 40\) fails its checksum"):
        _read(path, stored, chunk, full, mode)


def test_a_strided_destination_is_filled_block_by_block(tmp_path: Path) -> None:
    chunk = chunk_values((300, 70), torch.float32)
    path = tmp_path / "d.bin"
    stored = store_chunk(path, chunk, piece_size=PIECE)
    sub = Box((11, 3), (250, 60))
    dest = torch.zeros((60, 250)).t()
    request = read_request(path, stored, chunk, transfer.Target(sub, dest))
    transfer.read_into([request], verify=True, opener=LocalFile)
    assert bytes_of(dest) == bytes_of(region(chunk, sub))


@pytest.mark.parametrize("mode", MODES)
def test_a_whole_item_checksum_still_checks_the_whole_item(tmp_path: Path, mode: str) -> None:
    # Version-2 checkpoints have one digest per item: any damage fails any read of it.
    chunk = chunk_values((40, 1000), torch.float32)
    path = tmp_path / "d.bin"
    stored = store_chunk(path, chunk, piece_size=transfer.MAX_PIECE_SIZE)
    assert stored.checksum.count(":") == 1
    assert "@" not in stored.checksum
    _damage(path, stored.offset + stored.length - 1)
    with pytest.raises(CorruptCheckpointError, match=r"fails its checksum"):
        _read(path, stored, chunk, Box((0, 0), (1, 10)), mode)


def test_a_request_with_the_wrong_number_of_digests_is_refused(tmp_path: Path) -> None:
    chunk = chunk_values((40, 1000), torch.float32)
    path = tmp_path / "d.bin"
    stored = store_chunk(path, chunk, piece_size=PIECE)
    short = stored.checksum[:-16]
    with pytest.raises(ValueError, match="expected 40 digests"):
        transfer.ReadRequest(
            str(path), stored.offset, stored.length, (40, 1000), torch.float32, (), short
        )


# --------------------------------------------------------------------------- whole checkpoints


def _save(path: Path) -> dict[str, torch.Tensor]:
    state = {"w": chunk_values((1024, 600), torch.float32), "b": chunk_values((7,), torch.int64)}
    dcp_save(state, storage_writer=FileSystemWriter(path), no_dist=True)
    return state


def _load(path: Path) -> dict[str, torch.Tensor]:
    state = {"w": torch.zeros(1024, 600), "b": torch.zeros(7, dtype=torch.int64)}
    dcp_load(state, storage_reader=FileSystemReader(path, verify=True), no_dist=True)
    return state


def _as_version_2(path: Path) -> None:
    """Rewrite the checkpoint's metadata as dcp_impl wrote it before version 3: whole-item
    checksums, computed from the stored bytes."""
    doc = json.loads((path / METADATA_FILE).read_text())
    storage = doc["storage_data"]
    for k, (file, offset, length) in enumerate(
        zip(storage["file"], storage["offset"], storage["length"], strict=True)
    ):
        with open(path / storage["files"][file], "rb") as f:
            f.seek(offset)
            storage["checksum"][k] = transfer.checksum(f.read(length))
    (path / METADATA_FILE).write_text(json.dumps(as_version(doc, 2)))


def _damage_last_byte_of(path: Path, fqn: str) -> None:
    doc = json.loads((path / METADATA_FILE).read_text())
    storage = doc["storage_data"]
    k = storage["entry"].index(list(doc["state_dict_metadata"]).index(fqn))
    file = path / storage["files"][storage["file"][k]]
    _damage(file, storage["offset"][k] + storage["length"][k] - 1)


def test_a_checkpoint_holds_piece_checksums_that_verify_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _save(tmp_path)
    doc = json.loads((tmp_path / METADATA_FILE).read_text())
    assert doc["format_version"] >= 3  # piece checksums came with version 3
    # "w" (2 457 600 bytes) in the fewest equal pieces of at most 1 MiB, a power of two of them
    assert sum(c.startswith("xxh3_64@614400:") for c in doc["storage_data"]["checksum"]) == 1
    assert all(bytes_of(_load(tmp_path)[k]) == bytes_of(v) for k, v in state.items())
    assert cli_main(["verify", str(tmp_path)]) == 0
    _damage_last_byte_of(tmp_path, "w")
    assert cli_main(["verify", str(tmp_path)]) == 1
    assert "(piece 3 of 4) fails its checksum" in capsys.readouterr().err
    with pytest.raises(CheckpointException, match=r"piece 3 of 4\) fails its checksum"):
        _load(tmp_path)


def test_a_version_2_checkpoint_still_loads_and_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _save(tmp_path)
    _as_version_2(tmp_path)
    assert all(bytes_of(_load(tmp_path)[k]) == bytes_of(v) for k, v in state.items())
    assert cli_main(["verify", str(tmp_path)]) == 0
    _damage_last_byte_of(tmp_path, "w")
    with pytest.raises(CheckpointException, match=r"CorruptCheckpointError.*fails its checksum"):
        _load(tmp_path)
    assert cli_main(["verify", str(tmp_path)]) == 1
    assert "piece" not in capsys.readouterr().err  # one digest: the whole item


@pytest.mark.parametrize(
    ("length", "rows"),
    [(768, (0, 384)), (768, (384, 768)), (1536, (384, 768)), (1536, (1152, 1536))],
)
def test_a_half_or_quarter_of_a_row_shard_reads_only_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, length: int, rows: tuple[int, int]
) -> None:
    """Resharding rows by a factor of two or four (halves of a 1.5 MiB chunk, quarters of a
    3 MiB one) reads and hashes just the share's bytes, with the pieces writers make by
    default: with fixed 1 MiB pieces the second half of 1.5 MiB read 1.5 MiB."""
    chunk = chunk_values((length, 1024), torch.bfloat16)
    path = tmp_path / "d.bin"
    stored = store_chunk(path, chunk)
    sub = Box((rows[0], 0), (rows[1] - rows[0], 1024))
    read = counting_preadv(monkeypatch)
    loaded = _read(path, stored, chunk, sub, "mapped")
    assert bytes_of(loaded) == bytes_of(region(chunk, sub))
    assert sum(read) == (rows[1] - rows[0]) * 1024 * 2


def test_a_span_of_a_one_piece_item_reads_the_item_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half of an item of one piece (512 KiB) is read with the whole item into scratch and
    checked there: one ``preadv`` of the item, not its pages faulted in from the mapping."""
    chunk = chunk_values((256, 1024), torch.bfloat16)
    path = tmp_path / "d.bin"
    stored = store_chunk(path, chunk)
    assert "@" not in stored.checksum
    sub = Box((128, 0), (128, 1024))
    read = counting_preadv(monkeypatch)
    assert bytes_of(_read(path, stored, chunk, sub, "mapped")) == bytes_of(region(chunk, sub))
    assert read == [stored.length]
    _damage(path, stored.offset)  # outside the half, inside its one piece
    with pytest.raises(CorruptCheckpointError, match="fails its checksum"):
        _read(path, stored, chunk, sub, "mapped")
