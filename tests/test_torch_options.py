"""Constructor parity with torch's storage classes: torch's names and positions with torch's
meaning, unknown options a TypeError, what dcp_impl cannot honour refused (docs/migrating.md)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint import (
    FileSystemReader as TorchFSReader,
)
from torch.distributed.checkpoint import (
    FileSystemWriter as TorchFSWriter,
)
from torch.distributed.checkpoint import (
    HuggingFaceStorageReader,
    HuggingFaceStorageWriter,
)
from torch.distributed.checkpoint._extension import ExtensionRegistry, ZStandard
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.filesystem import SerializationFormat
from torch.distributed.checkpoint.staging import AsyncStager
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import async_save as dcp_async_save
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from dcp_impl import FileSystemReader, FileSystemWriter, HuggingFaceReader, HuggingFaceWriter
from dcp_impl.dtypes import DTYPES, DtypeInfo, raw_bytes
from dcp_impl.errors import OverwriteRefusedError, UnsupportedError
from dcp_impl.filesystem import is_data_file

PAIRS = [
    (FileSystemWriter, TorchFSWriter),
    (FileSystemReader, TorchFSReader),
    (HuggingFaceWriter, HuggingFaceStorageWriter),
    (HuggingFaceReader, HuggingFaceStorageReader),
]
CLASSES = [ours for ours, _ in PAIRS]
# Where our default differs from torch's, and why (docs/migrating.md says the same).
DEFAULTS_DIFFER = {
    # None: 2 threads for local folders, more for object stores (torch: 1).
    (HuggingFaceReader, "thread_count"),
}


def _parameters(cls: type) -> list[inspect.Parameter]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # type: ignore[misc]
    return [p for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=lambda c: c.__name__)
def test_torch_parameters_have_their_names_positions_and_defaults(ours: type, theirs: type) -> None:
    mine = _parameters(ours)
    for position, param in enumerate(_parameters(theirs)):
        assert mine[position].name == param.name, (position, param.name)
        if (ours, param.name) not in DEFAULTS_DIFFER:
            assert mine[position].default == param.default, param.name


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(FileSystemWriter, FsspecWriter), (FileSystemReader, FsspecReader)],
    ids=lambda c: c.__name__,
)
def test_fsspec_classes_parameters_are_accepted_by_name(ours: type, theirs: type) -> None:
    # FsspecWriter drops cache_staged_state_dict, so its later positions differ from
    # FileSystemWriter's: ours follow FileSystemWriter; fsspec's **kwargs are storage_options.
    names = {p.name for p in inspect.signature(ours.__init__).parameters.values()}
    assert {p.name for p in _parameters(theirs)} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_unknown_options_raise_type_error(tmp_path: Path, cls: type) -> None:
    for name in ("save_sharded", "not_an_option"):
        with pytest.raises(TypeError, match=name):
            cls(tmp_path, **{name: True})


class _Transform(ZStandard):
    """Stands in for any stream transform (ZStandard itself needs the zstandard package)."""

    def __init__(self) -> None:
        pass


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "words"),
    [
        (FileSystemWriter, {"_extensions": [_Transform()]}, UnsupportedError, "_Transform"),
        (
            FileSystemWriter,
            {"serialization_format": SerializationFormat.SAFETENSORS},
            UnsupportedError,
            "HuggingFaceWriter",
        ),
        (FileSystemWriter, {"thread_count": 0}, ValueError, "thread_count"),
        (FileSystemWriter, {"per_thread_copy_ahead": -1}, ValueError, "per_thread_copy_ahead"),
        (
            FileSystemReader,
            {"_extension_registry": ExtensionRegistry()},
            UnsupportedError,
            "stream transforms",
        ),
        (FileSystemReader, {"thread_count": 0}, ValueError, "thread_count"),
        (HuggingFaceWriter, {"thread_count": 0}, ValueError, "thread_count"),
        (
            HuggingFaceWriter,
            {"save_distributed": True, "thread_count_consolidation": 0},
            ValueError,
            "thread_count_consolidation",
        ),
        (HuggingFaceWriter, {"enable_consolidation": True}, ValueError, "save_distributed"),
        (HuggingFaceReader, {"thread_count": 0}, ValueError, "thread_count"),
    ],
)
def test_values_we_cannot_honour_are_refused_at_construction(
    tmp_path: Path, cls: type, kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words) as raised:
        cls(tmp_path, **kwargs)
    assert str(raised.value).startswith(f"{cls.__name__}: ")  # the subject comes first
    assert list(tmp_path.iterdir()) == []


def test_torch_defaults_passed_explicitly_are_accepted(tmp_path: Path) -> None:
    torch_save = SerializationFormat.TORCH_SAVE
    FileSystemWriter(tmp_path, True, True, 1, 10_000_000, False, True, None, torch_save)
    FileSystemWriter(tmp_path, _extensions=[], serialization_format=SerializationFormat.TORCH_SAVE)
    FileSystemReader(tmp_path, None)
    HuggingFaceWriter(tmp_path, None, 1, False, False, 1)
    HuggingFaceReader(tmp_path, 1)


def _round_trip(writer: Any, reader: Any, state: dict[str, torch.Tensor]) -> None:
    dcp_save(state, storage_writer=writer, no_dist=True)
    out = {k: torch.zeros_like(v) for k, v in state.items()}
    dcp_load(out, storage_reader=reader, no_dist=True)
    for key, value in state.items():
        assert torch.equal(out[key], value), key


def test_writer_is_async_saves_stager(tmp_path: Path) -> None:
    writer = FileSystemWriter(tmp_path, sync_files=False)
    assert isinstance(writer, AsyncStager)
    state = {"a": torch.arange(6.0), "b": torch.ones(2, dtype=torch.int8)}
    dcp_async_save(state, storage_writer=writer, no_dist=True).result()
    out = {k: torch.zeros_like(v) for k, v in state.items()}
    dcp_load(out, storage_reader=FileSystemReader(tmp_path), no_dist=True)
    for key, value in state.items():
        assert torch.equal(out[key], value), key


def test_staging_is_torchs(tmp_path: Path) -> None:
    state = {"a": torch.arange(4.0), "n": 3, "nested": {"b": [torch.ones(2, 3).t(), "x"]}}

    def outcome(value: Any) -> object:
        if isinstance(value, dict):
            return {k: outcome(v) for k, v in value.items()}
        if isinstance(value, list):
            return [outcome(v) for v in value]
        return value.tolist() if isinstance(value, torch.Tensor) else value

    ours = FileSystemWriter(tmp_path)
    theirs = TorchFSWriter(str(tmp_path))
    assert outcome(ours.stage(state)) == outcome(theirs.stage(state))
    assert ours.should_synchronize_after_execute == theirs.should_synchronize_after_execute


@pytest.mark.parametrize("row", DTYPES, ids=lambda row: row.name)
def test_staging_copies_every_dtype_shape_and_view(tmp_path: Path, row: DtypeInfo) -> None:
    # torch's own staging cannot make a 0-d bits or float4 tensor (docs/known-bugs.md).
    base = torch.arange(64, dtype=torch.uint8).view(row.torch_dtype)
    views = {"flat": base, "scalar": base[0], "strided": base.reshape(2, -1).t()}
    if row.torch_dtype.is_complex and row.torch_dtype is not torch.complex32:
        views["conj"] = base.conj()
    staged = FileSystemWriter(tmp_path).stage(views)
    expected = {k: raw_bytes(v).clone() for k, v in views.items()}
    base.view(torch.uint8).bitwise_xor_(1)  # training goes on: the staged copy must not see it
    for key, value in staged.items():
        assert value.dtype == row.torch_dtype, key
        assert value.shape == views[key].shape, key
        assert torch.equal(raw_bytes(value), expected[key]), key


def test_cached_staging_reuses_its_buffers(tmp_path: Path) -> None:
    writer = FileSystemWriter(tmp_path, cache_staged_state_dict=True)
    first = writer.stage({"a": torch.zeros(3), "b": torch.zeros(2)})
    second = writer.stage({"a": torch.ones(3), "b": torch.ones(4)})
    assert second["a"].data_ptr() == first["a"].data_ptr()  # same shape: the same buffer
    assert second["b"].data_ptr() != first["b"].data_ptr()  # new shape: a new one
    assert second["a"].tolist() == [1.0] * 3
    assert second["b"].tolist() == [1.0] * 4


def test_single_file_per_rank_false_writes_one_file_per_item(tmp_path: Path) -> None:
    state = {f"t{i}": torch.full((3,), float(i)) for i in range(4)}
    _round_trip(FileSystemWriter(tmp_path, False, False, 2), FileSystemReader(tmp_path), state)
    assert sum(is_data_file(p.name) for p in tmp_path.iterdir()) == 4


def test_single_file_per_rank_writes_one_file_per_thread(tmp_path: Path) -> None:
    state = {f"t{i}": torch.full((3,), float(i)) for i in range(4)}
    _round_trip(FileSystemWriter(tmp_path, True, False, 2), FileSystemReader(tmp_path), state)
    assert sum(is_data_file(p.name) for p in tmp_path.iterdir()) == 2


def test_hf_writer_takes_fqn_to_index_mapping_positionally(tmp_path: Path) -> None:
    state = {"a": torch.ones(2), "b": torch.zeros(3)}
    writer = HuggingFaceWriter(tmp_path, {"a": 1, "b": 2})
    _round_trip(writer, HuggingFaceReader(tmp_path, 1), state)
    assert set(load_file(tmp_path / "model-00002-of-00002.safetensors")) == {"b"}


def test_hf_enable_consolidation_writes_full_tensors(tmp_path: Path) -> None:
    state = {"a": torch.arange(6.0).reshape(2, 3)}
    writer = HuggingFaceWriter(tmp_path, None, 1, True, True, 3)  # torch's positions
    assert (writer.enable_consolidation, writer.thread_count_consolidation) == (True, 3)
    _round_trip(writer, HuggingFaceReader(tmp_path), state)
    assert torch.equal(load_file(tmp_path / "model.safetensors")["a"], state["a"])
    assert (tmp_path / "sharded").is_dir()


def test_hf_overwrite_false_refuses_with_torchs_words(tmp_path: Path) -> None:
    dcp_save({"a": torch.ones(2)}, storage_writer=HuggingFaceWriter(tmp_path), no_dist=True)
    before = sorted(p.name for p in tmp_path.iterdir())
    writer = HuggingFaceWriter(tmp_path, overwrite=False)
    with pytest.raises(CheckpointException) as info:
        dcp_save({"a": torch.zeros(2)}, storage_writer=writer, no_dist=True)
    (failure,) = info.value.failures.values()
    error = failure if isinstance(failure, BaseException) else failure[0]
    assert isinstance(error, OverwriteRefusedError)
    assert "Checkpoint already exists" in str(error)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
