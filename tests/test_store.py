"""dcp_impl.store: the Store contract kit on every built-in store, register_store, and both
backends and consolidate running on a store passed in as an instance."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

import dcp_impl
from dcp_impl.store import (
    FsspecStore,
    LocalStore,
    Store,
    is_checkpoint_id,
    is_url,
    open_store,
    register_store,
)
from dcp_impl.testing import StoreTests
from dcp_impl.transfer import ItemWriter
from spec_tests.sim.s3server import LocalS3


class TestLocalStore(StoreTests):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        return LocalStore(tmp_path / "ckpt")

    def put(self, store: Store, name: str, data: bytes) -> None:
        Path(store.path(name)).parent.mkdir(parents=True, exist_ok=True)
        Path(store.path(name)).write_bytes(data)

    def get(self, store: Store, name: str) -> bytes:
        return Path(store.path(name)).read_bytes()


class _ThroughFsspec(StoreTests):
    """Files put and got with fsspec's own calls on the store's URLs."""

    options: Mapping[str, Any] = {}

    def put(self, store: Store, name: str, data: bytes) -> None:
        fs, key = fsspec.core.url_to_fs(store.path(name), **self.options)
        fs.pipe_file(key, data)
        fs.invalidate_cache()

    def get(self, store: Store, name: str) -> bytes:
        fs, key = fsspec.core.url_to_fs(store.path(name), **self.options)
        return bytes(fs.cat_file(key))


class TestMemoryStore(_ThroughFsspec):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        root = f"memory://store-tests-{uuid.uuid4().hex[:12]}"
        yield FsspecStore(f"{root}/ckpt")
        fs = fsspec.filesystem("memory")
        if fs.exists(root):
            fs.rm(root, recursive=True)


class TestS3Store(_ThroughFsspec):
    @pytest.fixture
    def store(self, dcp_local_s3: LocalS3) -> Store:
        self.options = dcp_local_s3.storage_options
        return FsspecStore(dcp_local_s3.url("store-tests", uuid.uuid4().hex), self.options)


class DictStore(Store):
    """A store with only the primitives: everything else is Store's defaults."""

    def __init__(self, url: str, files: dict[str, bytes] | None = None) -> None:
        super().__init__(url)
        self.files = {} if files is None else files  # full path -> bytes, shared by children

    def child(self, name: str) -> DictStore:
        return DictStore(self.path(name), self.files)

    def list_files(self) -> list[str]:
        prefix = self.path("")
        names = (p[len(prefix) :] for p in self.files if p.startswith(prefix))
        return [n for n in names if "/" not in n]

    def size(self, name: str) -> int:
        return len(self._get(name))

    def read_range(self, name: str, start: int, length: int) -> bytes:
        return self._get(name)[start : start + length]

    def create(self, name: str, *, sync: bool) -> ItemWriter:
        return _DictWriter(self, name)

    def commit(self, name: str, data: bytes, *, sync: bool) -> None:
        self.files[self.path(name)] = bytes(data)

    def rename(self, source: str, target: str) -> None:
        self.files[self.path(target)] = self.files.pop(self.path(source))

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            self.files.pop(self.path(name), None)

    def _get(self, name: str) -> bytes:
        try:
            return self.files[self.path(name)]
        except KeyError:
            raise FileNotFoundError(self.path(name)) from None


class _DictWriter(ItemWriter):
    def __init__(self, store: DictStore, name: str) -> None:
        super().__init__(store.path(name))
        self._store, self._name = store, name
        self._parts: list[bytes] | None = []

    def _require_open(self) -> None:
        if self._parts is None:
            raise ValueError(f"{self.path}: write after close")

    def _put(self, piece: memoryview) -> None:
        assert self._parts is not None
        self._parts.append(bytes(piece))

    def close(self) -> None:
        if self._parts is not None:
            self._store.commit(self._name, b"".join(self._parts), sync=True)
            self._parts = None

    def discard(self) -> None:
        self._parts = None


class TestDictStore(StoreTests):
    """The kit on a store of primitives only: Store's defaults keep the contract."""

    @pytest.fixture
    def store(self) -> Store:
        return DictStore("dict://ckpt")

    def put(self, store: Store, name: str, data: bytes) -> None:
        assert isinstance(store, DictStore)
        store.files[store.path(name)] = data

    def get(self, store: Store, name: str) -> bytes:
        assert isinstance(store, DictStore)
        return store.files[store.path(name)]


def _state() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(3)
    return {"w": torch.randn(8, 6, generator=gen), "b": torch.arange(5), "step": 4}


def _blank(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else 0 for k, v in state.items()}


def _assert_same(loaded: Mapping[str, Any], saved: Mapping[str, Any]) -> None:
    for key, value in saved.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(loaded[key], value), key
        else:
            assert loaded[key] == value, key


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        (dcp_impl.FileSystemWriter, dcp_impl.FileSystemReader),
        (dcp_impl.HuggingFaceWriter, dcp_impl.HuggingFaceReader),
    ],
)
def test_backends_take_a_store_instance(writer: Any, reader: Any) -> None:
    store = DictStore("dict://run/step-1")
    state = _state()
    dcp_save(state, storage_writer=writer(store), no_dist=True)
    assert store.list_files()
    loaded = _blank(state)
    dcp_load(loaded, storage_reader=reader(store), no_dist=True)
    _assert_same(loaded, state)
    assert writer.validate_checkpoint_id(store)
    assert reader.validate_checkpoint_id(store)


def test_consolidate_takes_store_instances() -> None:
    files: dict[str, bytes] = {}
    sharded, full = DictStore("dict://sharded", files), DictStore("dict://full", files)
    state = {"w": torch.arange(12.0).reshape(3, 4)}
    dcp_save(state, storage_writer=dcp_impl.HuggingFaceWriter(sharded, save_distributed=True))
    dcp_impl.consolidate(sharded, full)
    loaded = {"w": torch.zeros(3, 4)}
    dcp_load(loaded, storage_reader=dcp_impl.HuggingFaceReader(full), no_dist=True)
    _assert_same(loaded, state)


def test_a_store_instance_takes_no_storage_options() -> None:
    with pytest.raises(ValueError, match="storage_options"):
        dcp_impl.FileSystemWriter(DictStore("dict://x"), storage_options={"key": "k"})


@pytest.fixture
def dict_protocol() -> Iterator[dict[str, DictStore]]:
    """``dictfs://`` registered to make DictStores; the made stores, by URL."""
    made: dict[str, DictStore] = {}

    def factory(url: str, options: Mapping[str, Any] | None) -> Store:
        assert options == {"token": "t"}
        made[url] = DictStore(url)
        return made[url]

    register_store("dictfs", factory)
    yield made
    register_store("dictfs", None)


def test_register_store_comes_before_fsspec(dict_protocol: dict[str, DictStore]) -> None:
    url = "dictfs://bucket/step-1"
    assert is_url(url)
    assert is_checkpoint_id(url)
    writer = dcp_impl.FileSystemWriter(url, storage_options={"token": "t"})
    dcp_save(_state(), storage_writer=writer, no_dist=True)
    assert dict_protocol[url].list_files()
    register_store("dictfs", None)
    assert not is_url(url)  # fsspec knows no dictfs


def test_register_store_refuses_bad_protocols() -> None:
    for bad in ["", "S3", "has space", "a://b", 3]:
        with pytest.raises(ValueError, match="URL scheme"):
            register_store(bad, lambda url, options: LocalStore(url))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        register_store("myfs", "not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("checkpoint_id", "kind"),
    [
        ("ckpt/step-1", LocalStore),
        (Path("ckpt"), LocalStore),
        ("memory://bucket/x", FsspecStore),
    ],
)
def test_open_store_chooses_by_id(checkpoint_id: str | os.PathLike[str], kind: type) -> None:
    assert isinstance(open_store(checkpoint_id), kind)


@pytest.mark.parametrize("bad", ["", "nosuch://bucket/x", "s3://", "a\0b", 3, None])
def test_open_store_refuses_other_ids(bad: Any) -> None:
    assert not is_checkpoint_id(bad)
    with pytest.raises(ValueError, match="expected a Store"):
        open_store(bad)
