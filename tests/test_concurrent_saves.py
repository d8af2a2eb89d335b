"""Concurrent saves, loads during a save, kills and a full disk at the commit (issue #22).

Two saves to one location never destroy a committed checkpoint; a load during a save sees the
old checkpoint or the new one, or raises, with ``verify`` on and off; a HuggingFace save
killed or out of space at any step leaves the old or the new checkpoint, never a mix, over
folders other tools wrote too (docs/format.md "Concurrent saves", docs/huggingface.md
"Commit rule").
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file

from dcp_impl import (
    FileSystemReader,
    FileSystemWriter,
    HuggingFaceReader,
    HuggingFaceWriter,
)
from dcp_impl.errors import ConcurrentSaveError
from dcp_impl.store import LOCK_NAME, LocalStore, commit_lock
from dcp_impl.transfer import ItemWriter

_FORK = multiprocessing.get_context("fork")
_MAPPING = {"w0": 1, "w1": 1, "w2": 2, "w3": 2}


def _state(k: int) -> dict[str, torch.Tensor]:
    return {f"w{i}": torch.full((16 + i,), float(100 * k + i)) for i in range(4)}


def _writer(kind: str, where: str | LocalStore, **options: Any) -> Any:
    if kind == "fs":
        return FileSystemWriter(where, **options)
    return HuggingFaceWriter(where, fqn_to_index_mapping=_MAPPING, **options)


def _load(kind: str, where: str | LocalStore, *, verify: bool | str = True) -> dict[str, Any]:
    state = {f"w{i}": torch.zeros(16 + i) for i in range(4)}
    reader: Any
    if kind == "fs":
        reader = FileSystemReader(where, verify=verify, thread_count=1)
    else:
        reader = HuggingFaceReader(where, verify=verify, thread_count=1)
    dcp.load(state, storage_reader=reader)
    return state


def _which(loaded: dict[str, Any], candidates: dict[str, dict[str, torch.Tensor]]) -> str | None:
    for name, state in candidates.items():
        if all(torch.equal(loaded[k], v) for k, v in state.items()):
            return name
    return None


def _failure_of(action: Callable[[], object]) -> str | None:
    """The repr of what ``action`` raised (torch wraps a rank's failure in its own
    CheckpointException, a BaseException), or None."""
    try:
        action()
    except BaseException as err:  # judged by the caller from its text
        return repr(err)
    return None


# ---------------------------------------------------------------- two real processes


class _AtBarrier:
    """Wraps a writer: ``finish`` waits until every process has written its data."""

    def __init__(self, inner: Any, barrier: Any) -> None:
        self._inner, self._barrier = inner, barrier

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def finish(self, *args: Any, **kwargs: Any) -> None:
        self._barrier.wait(timeout=60)
        self._inner.finish(*args, **kwargs)


def _save_in_child(kind: str, path: str, k: int, barrier: Any, results: Any) -> None:
    writer = _AtBarrier(_writer(kind, path), barrier)
    try:
        dcp.save(_state(k), storage_writer=writer)  # type: ignore[arg-type]
    except BaseException as err:  # reported to the parent, which judges it
        results.put((k, f"{type(err).__name__}: {err}"))
        return
    results.put((k, "ok"))


@pytest.mark.parametrize("kind", ["fs", "hf"])
def test_two_processes_saving_to_one_folder_leave_one_whole_save(kind: str, tmp_path: Path) -> None:
    path = str(tmp_path)
    dcp.save(_state(0), storage_writer=_writer(kind, path))
    for round_ in range(3):
        barrier, results = _FORK.Barrier(2), _FORK.Queue()
        ks = (2 * round_ + 1, 2 * round_ + 2)
        children = [
            _FORK.Process(target=_save_in_child, args=(kind, path, k, barrier, results)) for k in ks
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(120)
            assert child.exitcode == 0
        reports = dict(results.get(timeout=10) for _ in ks)
        succeeded = {f"save {k}": _state(k) for k in ks if reports[k] == "ok"}
        assert succeeded, reports  # the save that started last never loses
        for k in ks:
            assert reports[k] == "ok" or "ConcurrentSaveError" in reports[k], reports
        for verify in (True, False):
            assert _which(_load(kind, path, verify=verify), succeeded), (round_, reports)
    assert not (tmp_path / LOCK_NAME).exists()


# ---------------------------------------------------------------- the commit lock


def test_a_live_lock_makes_a_contender_wait_then_fail(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with (
        commit_lock(store),
        pytest.raises(ConcurrentSaveError, match="held by another save"),
        commit_lock(store, wait_s=0.05),
    ):
        pass
    with commit_lock(store, wait_s=0.05):  # released: taken at once
        pass
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize(
    "record",
    [
        {"host": os.uname().nodename, "pid": 2**22 + 12345, "time": 9e18, "token": "dead pid"},
        {"host": "elsewhere", "pid": 1, "time": 0.0, "token": "too old"},
        "not json",
    ],
    ids=["dead-process", "too-old", "unreadable"],
)
def test_a_stale_lock_is_broken(tmp_path: Path, record: object) -> None:
    text = record if isinstance(record, str) else json.dumps(record)
    (tmp_path / LOCK_NAME).write_text(text)
    store = LocalStore(tmp_path)
    with commit_lock(store, wait_s=0.05):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_save_whose_files_a_newer_save_removed_fails_loudly(tmp_path: Path) -> None:
    older, newer = FileSystemWriter(tmp_path), FileSystemWriter(tmp_path)
    dcp.save(_state(0), storage_writer=_Staged(older))  # writes data, then waits
    dcp.save(_state(1), storage_writer=newer)  # commits, removes the older save's files
    with pytest.raises(ConcurrentSaveError, match=r"removed .* by a newer save"):
        _Staged.finish_pending()
    assert _which(_load("fs", str(tmp_path)), {"newer": _state(1)}) == "newer"


class _Staged:
    """Wraps a writer so that ``dcp.save`` returns before ``finish``, run later."""

    pending: ClassVar[list[Callable[[], None]]] = []

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def finish(self, *args: Any, **kwargs: Any) -> None:
        _Staged.pending.append(lambda: self._inner.finish(*args, **kwargs))

    @staticmethod
    def finish_pending() -> None:
        _Staged.pending.pop()()


# ---------------------------------------------------------------- HF: kills and full disks


def _foreign_folder(path: Path, state: dict[str, torch.Tensor], *, shards: bool) -> None:
    """What save_pretrained / save_file leave: model.safetensors, or two files and an index."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    if not shards:
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, names in ((1, ["w0", "w1"]), (2, ["w2", "w3"])):
        name = f"model-{i:05d}-of-00002.safetensors"
        save_file({n: state[n] for n in names}, str(path / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, name))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


class _StepStore(LocalStore):
    """A local folder whose ``at``-th file operation runs ``act`` first (kill, or ENOSPC)."""

    def __init__(self, root: Path, at: int, act: Callable[[], None]) -> None:
        super().__init__(root)
        self.at, self.act, self.count = at, act, 0

    def _step(self) -> None:
        self.count += 1
        if self.count == self.at:
            self.act()

    def create(self, name: str, *, sync: bool) -> ItemWriter:
        self._step()
        return super().create(name, sync=sync)

    def commit(self, name: str, data: bytes, *, sync: bool) -> None:
        self._step()
        super().commit(name, data, sync=sync)

    def create_new(self, name: str, data: bytes) -> None:
        self._step()
        super().create_new(name, data)

    def rename(self, source: str, target: str) -> None:
        self._step()
        super().rename(source, target)

    def remove(self, names: Any) -> None:
        self._step()
        super().remove(names)

    def child(self, name: str) -> LocalStore:
        return _StepStore(self.root / name, self.at, self.act)


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _enospc() -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _save_killed(path: Path, at: int, mapping: dict[str, int] | None) -> None:
    store = _StepStore(path, at, _kill)
    dcp.save(_state(1), storage_writer=HuggingFaceWriter(store, fqn_to_index_mapping=mapping))


@pytest.mark.parametrize("shards", [False, True], ids=["model.safetensors", "index"])
@pytest.mark.parametrize("mapping", [None, _MAPPING], ids=["one-file", "two-files"])
def test_hf_save_killed_at_any_step_leaves_old_or_new(
    tmp_path: Path, shards: bool, mapping: dict[str, int] | None
) -> None:
    old, new = _state(0), _state(1)
    pending = tmp_path / "pending"
    for at in range(1, 100):
        path = tmp_path / f"kill{at}"
        _foreign_folder(path, old, shards=shards)
        child = _FORK.Process(target=_save_killed, args=(path, at, mapping))
        child.start()
        child.join(120)
        for verify in (True, False):
            loaded = _which(_load("hf", str(path), verify=verify), {"old": old, "new": new})
            assert loaded is not None, f"killed at step {at}: a mix loads ({verify=})"
        if child.exitcode == 0:
            assert loaded == "new"
            break
        assert child.exitcode == -signal.SIGKILL
        if (path / ".dcp_commit.json").exists() and not pending.exists():
            shutil.copytree(path, pending)  # killed after its commit point, for the CLI below
        dcp.save(_state(2), storage_writer=HuggingFaceWriter(path, fqn_to_index_mapping=mapping))
        assert _which(_load("hf", str(path)), {"next": _state(2)}) == "next"  # lock broken
    else:
        pytest.fail("the save never completed")
    assert at > 8
    assert pending.exists()
    if shards and mapping:  # one CLI run: verify reads a pending commit as the new checkpoint
        cli = [sys.executable, "-m", "dcp_impl", "verify", str(pending)]
        done = subprocess.run(cli, capture_output=True, text=True, check=False, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("kind", ["fs", "hf", "hf-over-foreign"])
def test_full_disk_at_any_step_keeps_the_previous_checkpoint(tmp_path: Path, kind: str) -> None:
    backend = "fs" if kind == "fs" else "hf"
    old, new = _state(0), _state(1)
    for at in range(1, 100):
        path = tmp_path / f"full{at}"
        if kind == "hf-over-foreign":
            _foreign_folder(path, old, shards=True)
        else:
            dcp.save(old, storage_writer=_writer(backend, str(path)))
        store = _StepStore(path, at, _enospc)
        failure = _failure_of(lambda s=store: dcp.save(new, storage_writer=_writer(backend, s)))
        if failure is None:
            assert _which(_load(backend, str(path)), {"new": new}) == "new"
            break
        assert "No space left on device" in failure
        expected = {"old": old, "new": new}  # after the commit point the new one holds
        for verify in (True, False):
            loaded = _which(_load(backend, str(path), verify=verify), expected)
            assert loaded is not None, f"ENOSPC at step {at}: a mix or nothing loads"
    else:
        pytest.fail("the save never completed")


# ---------------------------------------------------------------- a load during a save


class _SaveOnOpen(LocalStore):
    """A reader's store that runs a whole save when the ``nth`` data file is opened."""

    def __init__(self, root: Path, nth: int, save: Callable[[], None]) -> None:
        super().__init__(root)
        self.nth, self.save, self.opened = nth, save, 0

    def opener(self, path: str) -> Any:
        self.opened += 1
        if self.opened == self.nth:
            self.save()
        return super().opener(path)


@pytest.mark.parametrize("verify", [True, False, "whole"])
@pytest.mark.parametrize("kind", ["fs", "hf"])
@pytest.mark.parametrize("nth", [1, 2])
def test_a_load_during_a_save_is_old_or_new_or_raises(
    tmp_path: Path, kind: str, verify: bool | str, nth: int
) -> None:
    old, new = _state(0), _state(1)
    dcp.save(old, storage_writer=_writer(kind, str(tmp_path)))

    def save_new() -> None:
        dcp.save(new, storage_writer=_writer(kind, str(tmp_path)))

    store = _SaveOnOpen(tmp_path, nth, save_new)
    loaded: list[dict[str, Any]] = []
    failure = _failure_of(lambda: loaded.append(_load(kind, store, verify=verify)))
    if failure is not None:  # raising is allowed: with dcp_impl's typed error
        assert "CorruptCheckpointError" in failure or "ConcurrentSaveError" in failure
    else:
        assert _which(loaded[0], {"old": old, "new": new}) is not None, "a load mixed two saves"
    after = {"new": new} if store.opened >= nth else {"old": old}  # did the save run?
    assert _which(_load(kind, str(tmp_path)), after) is not None


def test_cleanup_keeps_newer_saves_files_and_removes_older_and_legacy_ones(
    tmp_path: Path,
) -> None:
    hour = 3600 * 10**9
    older = f"data-{time.time_ns() - hour:016x}{'a' * 16}-r0-0.bin"
    legacy = f"data-{'f' * 32}-r0-0.bin"  # a random id of dcp_impl before save stamps
    newer = f"data-{time.time_ns() + hour:016x}{'b' * 16}-r0-0.bin"  # a save still running
    for name in (older, legacy, newer):
        (tmp_path / name).write_bytes(b"x")
    dcp.save(_state(0), storage_writer=FileSystemWriter(tmp_path))
    left = {p.name for p in tmp_path.iterdir()}
    assert newer in left
    assert older not in left
    assert legacy not in left
