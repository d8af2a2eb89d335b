"""StoreTests: the contract every :class:`~dcp_impl.store.Store` keeps, as a pytest class."""

from __future__ import annotations

import abc
from typing import Any

import pytest
import torch
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from dcp_impl.errors import CorruptCheckpointError, InvalidMetadataError
from dcp_impl.filesystem import FileSystemReader, FileSystemWriter
from dcp_impl.huggingface import HuggingFaceReader, HuggingFaceWriter
from dcp_impl.layout import Box
from dcp_impl.store import Store
from dcp_impl.transfer import ReadRequest, Target, checksum

__all__ = ["StoreTests"]

_DATA = bytes(range(256)) * 3
_END = len(_DATA)
# Ranges at and across both ends of the file, empty ones included.
_RANGES = [(0, 0), (0, 1), (5, 10), (0, _END), (_END - 1, 5), (_END, 3), (_END + 8, 2)]
_VECTORS = [(0, []), (0, [0, 3]), (7, [1, 0, 200]), (_END - 4, [2, 2, 2]), (_END + 1, [4])]


class StoreTests(abc.ABC):
    """The contract of :class:`~dcp_impl.store.Store`, for any implementation.

    Subclasses provide the ``store`` fixture (a fresh store per test whose directory holds
    nothing, and may not exist yet) and :meth:`put` / :meth:`get`, which write and read a
    file without the store's methods, so that those are what is tested. A test that does
    not apply to a store is overridden and skipped with the reason.
    """

    @abc.abstractmethod
    @pytest.fixture
    def store(self, *args: Any, **kwargs: Any) -> Store:
        """A store of a fresh, empty location."""

    @abc.abstractmethod
    def put(self, store: Store, name: str, data: bytes) -> None:
        """Write the file ``name`` of ``store`` with ``data``, bypassing the store."""

    @abc.abstractmethod
    def get(self, store: Store, name: str) -> bytes:
        """Read the file ``name`` of ``store``, bypassing the store."""

    # ------------------------------------------------------------------ an empty location

    def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store.url, str)
        assert store.read_threads >= 1
        assert store.coalesce >= 0
        assert store.same_place(store)

    def test_missing_files_are_missing(self, store: Store) -> None:
        assert store.list_files() == []
        assert not store.is_dir()
        assert not store.exists("absent.bin")
        with pytest.raises(FileNotFoundError):
            store.size("absent.bin")
        with pytest.raises(FileNotFoundError):
            store.read_range("absent.bin", 0, 4)
        with pytest.raises(FileNotFoundError):
            store.read_small("absent.json", 100)
        with pytest.raises(FileNotFoundError):
            store.opener(store.path("absent.bin"))

    # ------------------------------------------------------------------ reading

    def test_reads_what_was_put(self, store: Store) -> None:
        store.make_dirs()
        self.put(store, "data.bin", _DATA)
        assert store.is_dir()
        assert store.exists("data.bin")
        assert store.list_files() == ["data.bin"]
        assert store.size("data.bin") == len(_DATA)
        assert store.read_small("data.bin", len(_DATA)) == _DATA

    def test_read_small_refuses_a_large_file(self, store: Store) -> None:
        store.make_dirs()
        self.put(store, "big.json", b"x" * 100)
        with pytest.raises(InvalidMetadataError):
            store.read_small("big.json", 99)

    @pytest.mark.parametrize(("start", "length"), _RANGES)
    def test_read_range_is_a_slice(self, store: Store, start: int, length: int) -> None:
        store.make_dirs()
        self.put(store, "data.bin", _DATA)
        assert store.read_range("data.bin", start, length) == _DATA[start : start + length]

    @pytest.mark.parametrize(("offset", "sizes"), _VECTORS)
    def test_opener_fills_buffers_in_order(
        self, store: Store, offset: int, sizes: list[int]
    ) -> None:
        store.make_dirs()
        self.put(store, "data.bin", _DATA)
        buffers = [memoryview(bytearray(n)) for n in sizes]
        source = store.opener(store.path("data.bin"))
        try:
            done = source.preadv(buffers, offset)
        finally:
            source.close()
        expected = _DATA[offset : offset + sum(sizes)]
        assert done == len(expected)
        assert b"".join(bytes(b) for b in buffers)[:done] == expected

    def test_read_fills_targets_and_checks_checksums(self, store: Store) -> None:
        values = torch.arange(24, dtype=torch.int32)
        raw = values.numpy().tobytes()
        store.make_dirs()
        self.put(store, "items.bin", b"head" + raw)
        sub = Box((1, 2), (2, 3))
        dest = torch.zeros(sub.sizes, dtype=torch.int32)

        def request(digest: str) -> ReadRequest:
            target = Target(sub, dest)
            path = store.path("items.bin")
            return ReadRequest(path, 4, len(raw), (4, 6), torch.int32, (target,), digest)

        store.read([request(checksum(raw))], verify=True)
        assert torch.equal(dest, values.reshape(4, 6)[1:3, 2:5])
        with pytest.raises(CorruptCheckpointError):
            store.read([request(checksum(b"other"))], verify=True)

    # ------------------------------------------------------------------ writing

    def test_commit_writes_and_replaces(self, store: Store) -> None:
        store.make_dirs()
        store.commit("meta.json", b"first", sync=True)
        assert self.get(store, "meta.json") == b"first"
        store.commit("meta.json", b"second, longer", sync=False)
        assert self.get(store, "meta.json") == b"second, longer"
        assert store.list_files() == ["meta.json"]  # no temporary file left behind

    def test_create_new_refuses_an_existing_file(self, store: Store) -> None:
        store.make_dirs()
        store.create_new("lock", b"first")
        with pytest.raises(FileExistsError):
            store.create_new("lock", b"second")
        assert self.get(store, "lock") == b"first"
        assert store.list_files() == ["lock"]  # no temporary file left behind

    def test_created_file_holds_its_items(self, store: Store) -> None:
        store.make_dirs()
        tensor = torch.arange(6, dtype=torch.float16).reshape(2, 3).t()  # not contiguous
        with store.create("data.bin", sync=True) as out:
            first = out.write_bytes(b"abc")
            second = out.write_tensor(tensor)
        expected = tensor.contiguous().numpy().tobytes()
        assert (first.offset, first.length, first.checksum) == (0, 3, checksum(b"abc"))
        assert (second.offset, second.length) == (3, len(expected))
        assert second.checksum == checksum(expected)
        assert self.get(store, "data.bin") == b"abc" + expected

    def test_failed_create_leaves_nothing(self, store: Store) -> None:
        store.make_dirs()

        def fail_midway() -> None:
            with store.create("d.bin", sync=False) as out:
                out.write_bytes(b"partial")
                raise RuntimeError("injected")

        with pytest.raises(RuntimeError, match="injected"):
            fail_midway()
        assert not store.exists("d.bin")
        assert store.list_files() == []

    def test_rename_replaces_the_target(self, store: Store) -> None:
        store.make_dirs()
        self.put(store, "a.tmp", b"new")
        self.put(store, "a.bin", b"old")
        store.rename("a.tmp", "a.bin")
        store.sync()
        assert self.get(store, "a.bin") == b"new"
        assert sorted(store.list_files()) == ["a.bin"]

    def test_remove_skips_missing_files(self, store: Store) -> None:
        store.make_dirs()
        self.put(store, "a.bin", b"a")
        self.put(store, "b.bin", b"b")
        store.remove(["a.bin", "never-there.bin"])
        assert store.list_files() == ["b.bin"]

    @pytest.mark.parametrize("name", ["model name.safetensors", "ünï-cödé.json", ".hidden.tmp"])
    def test_odd_names(self, store: Store, name: str) -> None:
        store.make_dirs()
        store.commit(name, b"odd", sync=False)
        assert store.list_files() == [name]
        assert store.read_small(name, 3) == b"odd"

    # ------------------------------------------------------------------ sub-directories

    def test_child_is_a_separate_directory(self, store: Store) -> None:
        child = store.child("sharded")
        assert not child.same_place(store)
        assert child.same_place(store.child("sharded"))
        child.make_dirs()
        child.commit("inner.json", b"in", sync=False)
        store.commit("outer.json", b"out", sync=False)
        assert child.list_files() == ["inner.json"]
        assert store.list_files() == ["outer.json"]
        assert self.get(child, "inner.json") == b"in"

    # ------------------------------------------------------------------ both backends on it

    @pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
    @pytest.mark.parametrize("backend", ["filesystem", "huggingface"])
    def test_backends_save_and_load_through_it(self, store: Store, backend: str) -> None:
        writer, reader = {
            "filesystem": (FileSystemWriter, FileSystemReader),
            "huggingface": (HuggingFaceWriter, HuggingFaceReader),
        }[backend]
        where = store.child(backend)
        values = torch.arange(24, dtype=torch.float32).reshape(4, 6)
        dcp_save({"w": values, "step": 3}, storage_writer=writer(where), no_dist=True)
        loaded: dict[str, Any] = {"w": torch.zeros(4, 6), "step": 0}
        dcp_load(loaded, storage_reader=reader(where), no_dist=True)
        assert torch.equal(loaded["w"], values)
        assert loaded["step"] == 3
