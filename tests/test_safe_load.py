"""Untrusted checkpoints: bytes entries reach the planner only under weights_only rules (#16)."""

from __future__ import annotations

import collections
import copy
import importlib.util
import io
import os
import random
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributed.checkpoint._nested_dict import flatten_state_dict, unflatten_state_dict
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter
from torch.optim import lr_scheduler

import dcp_impl
from dcp_impl.errors import CheckpointError, UnsafeCheckpointError
from dcp_impl.safe_load import PicklePolicy
from spec_tests.properties.hostile import Payload, mark

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


@dataclass(frozen=True)
class Point:
    """A harmless user type: needs an allow-list entry, nothing more."""

    x: int
    y: int


# Unpickling a Payload calls mark(path), which creates a file the test can see.
MARK = f"{mark.__module__}.mark"


@dataclass(frozen=True)
class Store:
    """A writer and a reader for one checkpoint location (local folder or memory:// URL)."""

    writer: Callable[[], StorageWriter]
    reader: Callable[..., StorageReader]


_KINDS = {
    "fs": (dcp_impl.FileSystemWriter, dcp_impl.FileSystemReader),
    "hf": (dcp_impl.HuggingFaceWriter, dcp_impl.HuggingFaceReader),
}


@pytest.fixture(params=["fs-local", "hf-local", "fs-url", "hf-url"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    kind, where = request.param.split("-")
    writer, reader = _KINDS[kind]
    path = str(tmp_path / "ckpt") if where == "local" else f"memory://safe/{uuid.uuid4().hex}"
    return Store(lambda: writer(path), lambda **kw: reader(path, **kw))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


def _refusal(state: dict[str, Any], reader: StorageReader) -> UnsafeCheckpointError:
    """The UnsafeCheckpointError a failing dcp.load reports (torch wraps it per rank)."""
    with pytest.raises(CheckpointException) as caught:
        dcp_load(state, storage_reader=reader, no_dist=True)
    (error, _trace) = caught.value.failures[0]
    assert isinstance(error, UnsafeCheckpointError), error
    return error


def test_the_issue_example_raises_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Evil:
        def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
            return (os.system, ("touch pwned",))

    monkeypatch.chdir(tmp_path)
    dcp_save(
        {"w": torch.zeros(2), "extra": Evil()},
        storage_writer=dcp_impl.FileSystemWriter("evil"),
        no_dist=True,
    )
    state = {"w": torch.ones(2), "extra": None}
    error = _refusal(state, dcp_impl.FileSystemReader("evil"))
    assert not (tmp_path / "pwned").exists()
    assert isinstance(error, dcp_impl.UnsafeCheckpointError)
    assert isinstance(error, CheckpointError)
    assert isinstance(error, ValueError)
    text = str(error)
    assert "'extra'" in text
    assert "posix.system" in text or "nt.system" in text
    assert "trust_pickle=True" in text
    assert state["extra"] is None


def test_hostile_entry_refused_by_every_reader(store: Store, marker: Path) -> None:
    dcp_save({"w": torch.zeros(2), "extra": Payload(str(marker))}, storage_writer=store.writer())
    state = {"w": torch.ones(2), "extra": None}
    error = _refusal(state, store.reader())
    assert not marker.exists()
    assert "'extra'" in str(error)
    assert MARK in str(error)
    assert "safe_globals" in str(error)


def test_trust_pickle_opts_in(store: Store, marker: Path) -> None:
    dcp_save({"extra": Payload(str(marker))}, storage_writer=store.writer())
    dcp_load({"extra": None}, storage_reader=store.reader(trust_pickle=True))
    assert marker.exists()  # the opt-in hands the entry to torch's planner, which runs it


def test_safe_globals_allow_one_type(store: Store) -> None:
    dcp_save({"p": Point(1, 2), "q": Point(3, 4)}, storage_writer=store.writer())
    error = _refusal({"p": None, "q": None}, store.reader())
    assert f"{Point.__module__}.Point" in str(error)
    state: dict[str, Any] = {"p": None, "q": None}
    dcp_load(state, storage_reader=store.reader(safe_globals=[Point]))
    assert state == {"p": Point(1, 2), "q": Point(3, 4)}


def test_process_allow_list_applies(store: Store) -> None:
    dcp_save({"p": Point(5, 6)}, storage_writer=store.writer())
    state: dict[str, Any] = {"p": None}
    with torch.serialization.safe_globals([Point]):
        dcp_load(state, storage_reader=store.reader())
        assert Point in torch.serialization.get_safe_globals()  # the check left it in place
    assert state == {"p": Point(5, 6)}


def test_no_entry_reaches_the_planner_when_one_is_refused(tmp_path: Path, marker: Path) -> None:
    saved = {"a": "safe", "b": Payload(str(marker)), "c": 7}
    dcp_save(saved, storage_writer=dcp_impl.FileSystemWriter(tmp_path))
    state: dict[str, Any] = {"a": "old", "b": None, "c": 0}
    _refusal(state, dcp_impl.FileSystemReader(tmp_path))
    assert state == {"a": "old", "b": None, "c": 0}
    assert not marker.exists()


# --------------------------------------------------------------- what loads without the opt-in


def _model_and_optimizer(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def _schedulers(optimizer: torch.optim.Optimizer) -> dict[str, lr_scheduler.LRScheduler | Any]:
    return {
        "step": lr_scheduler.StepLR(optimizer, 2),
        "cosine": lr_scheduler.CosineAnnealingLR(optimizer, 10),
        "one-cycle": lr_scheduler.OneCycleLR(optimizer, 1.0, total_steps=10),
        "lambda": lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.9**epoch),
        "plateau": lr_scheduler.ReduceLROnPlateau(optimizer),
        "sequential": lr_scheduler.SequentialLR(
            optimizer,
            [lr_scheduler.LinearLR(optimizer), lr_scheduler.ExponentialLR(optimizer, 0.9)],
            milestones=[2],
        ),
        "cyclic": lr_scheduler.CyclicLR(optimizer, 0.01, 0.1),
    }


def _common_entries() -> dict[str, Any]:
    """Non-tensor entries as real training checkpoints hold them."""
    _, optimizer = _model_and_optimizer(0)
    generator = np.random.default_rng(3)
    generator.random(5)
    entries: dict[str, Any] = {
        "param_groups": optimizer.state_dict()["param_groups"],
        "step": 1234,
        "raw_bytes": io.BytesIO(b"\x00\xffraw"),  # DCP's own type for a bytes entry
        "epoch_fraction": 0.25,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "numpy_generator": generator.bit_generator.state,
        "python_rng": random.getstate(),
        "numpy_scalars": {"loss": np.float32(0.5), "tokens": np.int64(10**12)},
        "dataloader": {
            "_num_yielded": 17,
            "_sampler_iter_state": None,
            "_index_sampler_state": {"samples_yielded": 17, "order": [3, 1, 2]},
            "dataset_state": {"shard": "part-00017", "offset": 4096, "done": False},
            "names": ("train", "eval"),
            "seen": {1, 2},
            "raw": b"\x00\x01",
            "empty": b"",  # pickled as builtins.bytes(), not through _codecs.encode
            "ordered": collections.OrderedDict(a=1),
        },
    }
    for name, scheduler in _schedulers(optimizer).items():
        entries[f"scheduler_{name}"] = scheduler.state_dict()
    return entries


@pytest.mark.parametrize("name", sorted(_common_entries()))
def test_common_entries_pass_the_check(name: str) -> None:
    buffer = io.BytesIO()
    torch.save(_common_entries()[name], buffer)
    PicklePolicy().check(name, buffer.getvalue())


def _blank(state: dict[str, Any]) -> dict[str, Any]:
    """A load target of the structure DCP sees in ``state``, every leaf different from it."""
    flat, mappings = flatten_state_dict(state)
    leaves = {
        k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else None for k, v in flat.items()
    }
    return unflatten_state_dict(leaves, mappings)


def _assert_same(got: Any, want: Any, where: str = "") -> None:
    assert type(got) is type(want), f"{where}: {type(got)} != {type(want)}"
    if isinstance(want, dict):
        assert list(got) == list(want), where
        for key in want:
            _assert_same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype, where
        assert torch.equal(got, want), where
    elif isinstance(want, io.BytesIO):
        assert got.getvalue() == want.getvalue(), where
    elif isinstance(want, np.ndarray):
        assert got.dtype == want.dtype, where
        assert np.array_equal(got, want), where
    else:
        assert got == want, where


def test_common_entries_round_trip_without_opt_in(store: Store) -> None:
    saved = _common_entries()
    dcp_save(copy.deepcopy(saved), storage_writer=store.writer())
    state = _blank(saved)
    dcp_load(state, storage_reader=store.reader())
    # Compared as DCP stores them: each leaf is one bytes entry (mappings become plain dicts).
    _assert_same(flatten_state_dict(state)[0], flatten_state_dict(saved)[0])


def test_numpy_object_arrays_are_refused() -> None:
    buffer = io.BytesIO()
    torch.save(np.array([1, "a", None], dtype=object), buffer)
    with pytest.raises(UnsafeCheckpointError, match="ObjectDType"):
        PicklePolicy().check("objects", buffer.getvalue())


def test_bytes_that_are_no_checkpoint_are_refused() -> None:
    with pytest.raises(UnsafeCheckpointError, match="'junk': expected an object"):
        PicklePolicy().check("junk", b"not a pickle at all")
    PicklePolicy(trust=True).check("junk", b"not a pickle at all")  # the opt-in checks nothing


def _train(seed: int, steps: int) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    model, optimizer = _model_and_optimizer(seed)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for _ in range(steps):
        model(torch.randn(5, 4)).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return model, optimizer, scheduler


def _training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> Any:
    model_state, optim_state = get_state_dict(model, optimizer)
    return {
        "model": model_state,
        "optim": optim_state,
        "scheduler": scheduler.state_dict(),
        "step": scheduler.last_epoch,
    }


def test_training_state_round_trips_with_defaults(store: Store) -> None:
    saved = _training_state(*_train(seed=0, steps=5))
    dcp_save(copy.deepcopy(saved), storage_writer=store.writer())
    model, optimizer, scheduler = _train(seed=1, steps=1)
    state = _training_state(model, optimizer, scheduler)
    dcp_load(state, storage_reader=store.reader())
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    scheduler.load_state_dict(state["scheduler"])
    _assert_same(_training_state(model, optimizer, scheduler), saved)


def test_read_items_checks_bytes_entries_by_default(tmp_path: Path, marker: Path) -> None:
    """A reader built on dcp_impl.transfer.read_items (the docs' one-file example) is safe by
    default."""
    path = Path(__file__).parents[1] / "docs" / "examples" / "one_file_backend.py"
    spec = importlib.util.spec_from_file_location("dcp_safe_load_example", path)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example  # dataclasses look their module up by name
    spec.loader.exec_module(example)
    dcp_save({"extra": Payload(str(marker))}, storage_writer=example.OneFileWriter(tmp_path))
    error = _refusal({"extra": None}, example.OneFileReader(tmp_path))
    assert MARK in str(error)
    assert not marker.exists()
