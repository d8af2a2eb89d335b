"""dcp_impl's backends on object stores: fsspec URLs, against ``memory://`` and a local S3.

Every backend operation runs twice: on fsspec's in-memory file system (no server) and on a
real S3 protocol server (moto, bound to 127.0.0.1) reached through s3fs with explicit
``storage_options``. The server is this module's own fixture; it should move to the shared
``spec_tests.sim.s3server`` once that is settled.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import fsspec
import pytest
import safetensors.torch
import torch
from fsspec import AbstractFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.planner import WriteItem
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter

from dcp_impl import transfer
from dcp_impl.__main__ import main as cli_main
from dcp_impl.errors import CheckpointNotFoundError, CorruptCheckpointError, WriteFailedError
from dcp_impl.filesystem import METADATA_FILE, FileSystemReader, FileSystemWriter, is_data_file
from dcp_impl.huggingface import HuggingFaceReader, HuggingFaceWriter, consolidate
from dcp_impl.layout import Box
from dcp_impl.store import FsspecStore, ObjectSource, open_store
from spec_tests.sim import harness

BUCKET = "dcp-impl-tests"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def s3_options() -> Iterator[dict[str, Any]]:
    """A moto S3 server on a free loopback port with one bucket; s3fs options to reach it."""
    server_module = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        # boto3, not s3fs: s3fs's mkdir sends a LocationConstraint moto refuses in us-east-1.
        client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **credentials)
        client.create_bucket(Bucket=BUCKET)
        yield {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION},
        }
    finally:
        server.stop()


@dataclass(frozen=True, slots=True)
class Place:
    """A fresh checkpoint location: its URL, the options to pass, and a file system on it."""

    url: str
    options: Mapping[str, Any] | None
    fs: AbstractFileSystem
    root: str  # the URL as ``fs`` names it

    def key(self, name: str) -> str:
        return f"{self.root}/{name}"

    def names(self) -> set[str]:
        self.fs.invalidate_cache()
        prefix = f"{self.root}/"
        return {p[len(prefix) :] for p in self.fs.find(self.root) if p.startswith(prefix)}


@pytest.fixture(params=["memory", "s3"])
def place(request: pytest.FixtureRequest) -> Iterator[Place]:
    unique = uuid.uuid4().hex[:12]
    if request.param == "memory":
        fs = fsspec.filesystem("memory")
        yield Place(f"memory://dcp-{unique}/ckpt", None, fs, f"/dcp-{unique}/ckpt")
        if fs.exists(f"/dcp-{unique}"):
            fs.rm(f"/dcp-{unique}", recursive=True)
    else:
        options = request.getfixturevalue("s3_options")
        fs = fsspec.filesystem("s3", **options)
        yield Place(f"s3://{BUCKET}/{unique}/ckpt", options, fs, f"{BUCKET}/{unique}/ckpt")


def _state() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(7)
    return {
        "w": torch.randn(6, 5, generator=gen).to(torch.bfloat16),
        "b": torch.arange(7, dtype=torch.int64),
        "flag": torch.tensor(True),
        "step": 11,
    }


def _blank(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else 0 for k, v in state.items()}


def _raw(t: torch.Tensor) -> bytes:
    return bytes(harness.as_bytes(t).numpy())


def _assert_same(out: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    assert out.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert out[name].dtype == value.dtype, name
            assert _raw(out[name]) == _raw(value), name
        else:
            assert out[name] == value, name


class Maker(Protocol):
    def __call__(self, place: Place, **kwargs: Any) -> tuple[StorageWriter, StorageReader]: ...


def _fs(place: Place, **kwargs: Any) -> tuple[StorageWriter, StorageReader]:
    return (
        FileSystemWriter(place.url, storage_options=place.options, **kwargs),
        FileSystemReader(place.url, storage_options=place.options),
    )


def _hf(place: Place, **kwargs: Any) -> tuple[StorageWriter, StorageReader]:
    return (
        HuggingFaceWriter(place.url, storage_options=place.options, **kwargs),
        HuggingFaceReader(place.url, storage_options=place.options),
    )


BACKENDS: dict[str, Maker] = {"fs": _fs, "hf": _hf}


def _save(writer: StorageWriter, state: Mapping[str, Any], **kwargs: Any) -> None:
    dcp_save(dict(state), storage_writer=writer, no_dist=True, **kwargs)


def _load(reader: StorageReader, state: Mapping[str, Any]) -> dict[str, Any]:
    out = _blank(state)
    dcp_load(out, storage_reader=reader, no_dist=True)
    return out


def _failure(info: pytest.ExceptionInfo[CheckpointException]) -> BaseException:
    (failure,) = info.value.failures.values()
    return failure if isinstance(failure, BaseException) else failure[0]


# --------------------------------------------------------------------------- round trips


def test_filesystem_backend_round_trip(place: Place) -> None:
    state = _state()
    writer = FileSystemWriter(place.url, storage_options=place.options, thread_count=3)
    reader = FileSystemReader(place.url, storage_options=place.options)
    _save(writer, state)
    names = place.names()
    assert METADATA_FILE in names
    assert sum(map(is_data_file, names)) == 3  # one object per writer thread
    _assert_same(_load(reader, state), state)
    assert writer.checkpoint_id == place.url
    assert reader.checkpoint_id == place.url


def test_huggingface_backend_round_trip(place: Place) -> None:
    state = _state()
    writer, reader = _hf(place, fqn_to_index_mapping={"w": 1, "b": 2, "flag": 2})
    _save(writer, state)
    names = place.names()
    assert {"model-00001-of-00002.safetensors", "model.safetensors.index.json"} <= names
    assert not any(name.endswith(".tmp") for name in names)
    # The objects are plain safetensors files.
    blob = place.fs.cat_file(place.key("model-00001-of-00002.safetensors"))
    assert _raw(safetensors.torch.load(blob)["w"]) == _raw(state["w"])
    _assert_same(_load(reader, state), state)


@dataclass(frozen=True, slots=True)
class _Backend:
    """A backend object (spec_tests' contract) over one Place, for the N-rank harness."""

    name: str
    make: Maker
    place: Place
    writer_kwargs: Mapping[str, Any]

    @property
    def capabilities(self) -> frozenset[str] | None:
        return None

    def make_writer(self, path: str) -> StorageWriter:
        return self.make(self.place, **self.writer_kwargs)[0]

    def make_reader(self, path: str) -> StorageReader:
        return self.make(self.place)[1]


@pytest.mark.parametrize(
    ("kind", "writer_kwargs"),
    [
        ("fs", {}),
        ("hf", {"save_distributed": True}),
        ("hf", {"save_distributed": True, "consolidate": True}),
    ],
)
def test_resharded_load(place: Place, kind: str, writer_kwargs: dict[str, Any]) -> None:
    """Saved in row blocks by 2 ranks, loaded in column blocks by 3 ranks, bit-exact."""
    full = torch.arange(8 * 9, dtype=torch.float32).reshape(8, 9)
    saved = [[Box((0, 0), (5, 9))], [Box((5, 0), (3, 9))]]
    backend = _Backend(kind, BACKENDS[kind], place, writer_kwargs)
    shards = harness.shard(full, saved)
    harness.save(backend, place.url, [{"m": s} for s in shards])
    wanted = [Box((0, 0), (8, 3)), Box((0, 3), (8, 4)), Box((2, 7), (6, 2))]
    requests = [{"m": harness.TensorRequest(torch.float32, (8, 9), (box,))} for box in wanted]
    results = harness.load(backend, place.url, requests)
    for box, result in zip(wanted, results, strict=True):
        (got,) = result["m"]
        assert _raw(got) == _raw(harness.region(full, box)), box
    if writer_kwargs.get("consolidate"):
        assert "model.safetensors" in place.names()
        assert any(name.startswith("sharded/shard-") for name in place.names())


def test_consolidate_between_urls(place: Place) -> None:
    full = torch.randn(4, 6)
    source = Place(f"{place.url}/in", place.options, place.fs, place.key("in"))
    backend = _Backend("hf", _hf, source, {"save_distributed": True})
    shards = harness.shard(full, [[Box((0, 0), (4, 2))], [Box((0, 2), (4, 4))]])
    harness.save(backend, source.url, [{"t": s} for s in shards])
    consolidate(source.url, f"{place.url}/out", storage_options=place.options)
    out = HuggingFaceReader(f"{place.url}/out", storage_options=place.options)
    loaded = _load(out, {"t": full})
    assert _raw(loaded["t"]) == _raw(full)
    with pytest.raises(ValueError, match="must differ"):
        consolidate(source.url, f"{source.url}/", storage_options=place.options)


# --------------------------------------------------------------------------- commit rules


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_overwrite_false_refuses_a_committed_checkpoint(place: Place, kind: str) -> None:
    _save(_fs(place)[0], {"w": torch.ones(2)})
    before = {name: place.fs.cat_file(place.key(name)) for name in place.names()}
    writer = FileSystemWriter(place.url, storage_options=place.options, overwrite=False)
    with pytest.raises(CheckpointException, match="overwrite=False"):
        _save(writer, {"w": torch.zeros(2)})
    assert {name: place.fs.cat_file(place.key(name)) for name in place.names()} == before


class _FailingPlanner(DefaultSavePlanner):
    """Fails resolving the item named ``fqn``: inside write_data, after other items wrote."""

    def __init__(self, fqn: str) -> None:
        super().__init__()
        self.fqn = fqn

    def resolve_data(self, write_item: WriteItem) -> Any:
        if write_item.index.fqn == self.fqn:
            raise OSError(f"injected failure resolving {self.fqn}")
        return super().resolve_data(write_item)


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_failed_save_commits_nothing_and_keeps_the_previous_checkpoint(
    place: Place, kind: str
) -> None:
    old = _state()
    writer, reader = BACKENDS[kind](place)
    _save(writer, old)
    before = {name: place.fs.cat_file(place.key(name)) for name in place.names()}
    new = {
        k: v + 1 if isinstance(v, torch.Tensor) and v.dtype != torch.bool else v
        for k, v in old.items()
    }
    writer, _ = BACKENDS[kind](place, thread_count=2)
    with pytest.raises(CheckpointException) as info:
        _save(writer, new, planner=_FailingPlanner("w"))
    assert "injected failure" in repr(_failure(info)) + repr(_failure(info).__cause__)
    # No metadata object was written and no new object stays behind (no half upload).
    assert {name: place.fs.cat_file(place.key(name)) for name in place.names()} == before
    _assert_same(_load(reader, old), old)


def test_failed_filesystem_write_is_a_write_failed_error(place: Place) -> None:
    writer = FileSystemWriter(place.url, storage_options=place.options)
    with pytest.raises(CheckpointException) as info:
        _save(writer, {"w": torch.ones(3)}, planner=_FailingPlanner("w"))
    assert isinstance(_failure(info), WriteFailedError)
    assert place.names() == set()


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_resave_removes_superseded_objects(place: Place, kind: str) -> None:
    kwargs: dict[str, Any] = {"fqn_to_index_mapping": {"a": 1, "b": 2}} if kind == "hf" else {}
    state = {"a": torch.ones(3), "b": torch.zeros(2)}
    _save(BACKENDS[kind](place, **kwargs)[0], state)
    first = place.names()
    place.fs.pipe_file(place.key("notes.txt"), b"not ours")  # never touched
    state2 = {"a": torch.full((3,), 5.0), "b": torch.ones(2)}
    writer, reader = BACKENDS[kind](place)  # hf: one file now, model.safetensors
    _save(writer, state2)
    second = place.names()
    assert "notes.txt" in second
    data = {n for n in first if is_data_file(n) or n.endswith(".safetensors")}
    assert data
    assert not data & second
    _assert_same(_load(reader, state2), state2)


# --------------------------------------------------------------------------- damaged data


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_flipped_byte_in_a_data_object_is_detected(place: Place, kind: str) -> None:
    state = {"w": torch.arange(64, dtype=torch.float32)}
    writer, reader = BACKENDS[kind](place)
    _save(writer, state)
    (name,) = [n for n in place.names() if is_data_file(n) or n.endswith(".safetensors")]
    blob = bytearray(place.fs.cat_file(place.key(name)))
    blob[-5] ^= 0x40  # inside the tensor's bytes, past any header
    place.fs.pipe_file(place.key(name), bytes(blob))
    with pytest.raises(CheckpointException) as info:
        _load(reader, state)
    failure = _failure(info)
    assert isinstance(failure, CorruptCheckpointError)
    assert "checksum" in str(failure)
    assert name in str(failure)


def test_missing_data_object_is_detected(place: Place) -> None:
    state = {"w": torch.ones(4)}
    writer, reader = _fs(place)
    _save(writer, state)
    (name,) = [n for n in place.names() if is_data_file(n)]
    place.fs.rm_file(place.key(name))
    with pytest.raises(CheckpointException) as info:
        _load(reader, state)
    failure = _failure(info)
    assert isinstance(failure, CorruptCheckpointError)
    assert "missing" in str(failure)


def test_missing_checkpoint_is_reported(place: Place) -> None:
    with pytest.raises(CheckpointNotFoundError):
        FileSystemReader(place.url, storage_options=place.options).read_metadata()
    with pytest.raises(CheckpointNotFoundError):
        HuggingFaceReader(place.url, storage_options=place.options).read_metadata()


# --------------------------------------------------------------------------- ids, options, CLI


@pytest.mark.parametrize(
    ("checkpoint_id", "expected"),
    [
        ("s3://bucket/prefix", True),
        ("memory://x/y", True),
        ("gs://b/p", True),
        ("simplecache::s3://bucket/p", True),
        ("/local/dir", True),
        ("nosuchprotocol://b/p", False),
        ("s3://", False),
        ("s3://bucket/\0", False),
        ("", False),
        (None, False),
        (b"s3://b/p", False),
        (42, False),
    ],
)
def test_validate_checkpoint_id_on_urls_and_garbage(checkpoint_id: object, expected: bool) -> None:
    for cls in (FileSystemWriter, FileSystemReader, HuggingFaceWriter, HuggingFaceReader):
        assert cls.validate_checkpoint_id(checkpoint_id) is expected  # type: ignore[arg-type]


def test_storage_options_reach_fsspec(s3_options: dict[str, Any]) -> None:
    url = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    options = {**s3_options, "default_block_size": 7 << 20}
    for made in (
        FileSystemWriter(url, storage_options=options),
        FileSystemReader(url, storage_options=options),
        HuggingFaceWriter(url, storage_options=options),
        HuggingFaceReader(url, storage_options=options),
    ):
        store = made.store
        assert isinstance(store, FsspecStore)
        assert store.fs.storage_options["default_block_size"] == 7 << 20
        assert store.fs.storage_options["client_kwargs"] == s3_options["client_kwargs"]


def test_environment_variables_reach_fsspec(
    s3_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No storage_options: botocore's AWS_* variables point s3fs at the server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_options["client_kwargs"]["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    s3fs = pytest.importorskip("s3fs")
    s3fs.S3FileSystem.clear_instance_cache()  # an instance made before the variables were set
    url = f"s3://{BUCKET}/{uuid.uuid4().hex}/ckpt"
    state = {"w": torch.arange(5.0)}
    _save(FileSystemWriter(url), state)
    _assert_same(_load(FileSystemReader(url), state), state)
    # The command line takes URLs too.
    assert cli_main(["verify", url]) == 0
    assert "OK: dcp_impl filesystem checkpoint" in capsys.readouterr().out
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_cli_inspects_and_verifies_urls(
    place: Place, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if place.options is not None:
        pytest.skip("the command line takes S3 options from the environment (tested above)")
    _save(BACKENDS[kind](place)[0], {"w": torch.ones(3, 2)})
    assert cli_main(["inspect", place.url]) == 0
    assert "w" in capsys.readouterr().out
    assert cli_main(["verify", place.url]) == 0
    (name,) = [n for n in place.names() if is_data_file(n) or n.endswith(".safetensors")]
    blob = bytearray(place.fs.cat_file(place.key(name)))
    blob[-1] ^= 1
    place.fs.pipe_file(place.key(name), bytes(blob))
    assert cli_main(["verify", place.url]) == 1
    assert cli_main(["verify", "nosuchprotocol://x"]) == 2


# --------------------------------------------------------------------------- the pieces


def test_object_source_reads_ranges_into_buffers(place: Place) -> None:
    data = bytes(range(256)) * 3
    place.fs.pipe_file(place.key("blob"), data)
    source = ObjectSource(place.fs, place.key("blob"))
    a, b, c = bytearray(10), bytearray(0), bytearray(20)
    assert source.preadv([memoryview(a), memoryview(b), memoryview(c)], 100) == 30
    assert bytes(a + c) == data[100:130]
    tail = bytearray(50)
    assert source.preadv([memoryview(tail)], len(data) - 8) == 8  # short only at the end
    assert bytes(tail[:8]) == data[-8:]
    assert source.preadv([memoryview(tail)], len(data) + 3) == 0
    with pytest.raises(FileNotFoundError):
        ObjectSource(place.fs, place.key("absent"))


@settings(max_examples=25, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=300),
    sizes=st.lists(st.integers(0, 40), max_size=8),
    offset=st.integers(0, 320),
    part=st.integers(1, 64),
)
def test_object_source_matches_the_bytes(
    data: bytes, sizes: list[int], offset: int, part: int
) -> None:
    """Any buffer split, offset and GET size reads exactly the stored bytes (memory://)."""
    fs = fsspec.filesystem("memory")
    key = f"/dcp-prop/{uuid.uuid4().hex}"
    fs.pipe_file(key, data)
    buffers = [bytearray(n) for n in sizes]
    try:
        done = ObjectSource(fs, key, part=part).preadv([memoryview(b) for b in buffers], offset)
    finally:
        fs.rm_file(key)
    expected = data[offset : offset + sum(sizes)]
    assert done == len(expected)
    assert b"".join(buffers)[:done] == expected


def test_object_writer_leaves_no_object_when_it_fails(place: Place) -> None:
    store = open_store(place.url, place.options)
    store.make_dirs()

    def fail_midway() -> None:
        with store.create("data.bin", sync=True) as out:
            out.write_bytes(b"x" * 1000)
            raise RuntimeError("midway")

    with pytest.raises(RuntimeError, match="midway"):
        fail_midway()
    assert not place.fs.exists(place.key("data.bin"))
    with store.create("data.bin", sync=True) as out:
        first = out.write_bytes(b"abc")
        second = out.write_tensor(torch.arange(3, dtype=torch.int16))
    assert (first.offset, first.length, second.offset, second.length) == (0, 3, 3, 6)
    assert second.checksum == transfer.checksum(
        torch.arange(3, dtype=torch.int16).numpy().tobytes()
    )
    assert place.fs.cat_file(place.key("data.bin"))[:3] == b"abc"
    with pytest.raises(ValueError, match="write after close"):
        out.write_bytes(b"more")


def test_store_small_files_and_listing(place: Place) -> None:
    store = open_store(place.url, place.options)
    store.make_dirs()
    store.commit("meta.json", b"{}", sync=True)
    store.commit("meta.json", b'{"v": 2}', sync=True)  # replaced whole
    assert store.read_small("meta.json", 100) == b'{"v": 2}'
    with pytest.raises(ValueError, match="expected at most 3 bytes"):
        store.read_small("meta.json", 3)
    with pytest.raises(FileNotFoundError):
        store.read_small("absent.json", 100)
    assert store.read_range("meta.json", 2, 3) == b'v": '[:3]
    sub = store.child("sharded")
    sub.make_dirs()
    sub.commit("x", b"1", sync=True)
    assert store.list_files() == ["meta.json"]  # files directly inside only
    assert sub.list_files() == ["x"]
    assert sub.path("x") == f"{place.url}/sharded/x"
    store.rename("meta.json", "moved.json")
    store.remove(["moved.json", "never-there"])
    assert store.list_files() == []
    assert store.same_place(open_store(place.url + "/", place.options))
    assert not store.same_place(sub)


def test_failed_multipart_upload_is_aborted(s3_options: dict[str, Any]) -> None:
    """A data object large enough to upload in parts, failing midway: no object and no
    incomplete multipart upload stay behind."""
    boto3 = pytest.importorskip("boto3")
    prefix = uuid.uuid4().hex
    options = {**s3_options, "default_block_size": 5 << 20}  # S3's smallest part
    store = open_store(f"s3://{BUCKET}/{prefix}", options)

    def fail_after_two_parts() -> None:
        with store.create("big.bin", sync=True) as out:
            out.write_bytes(bytes(11 << 20))  # two parts uploaded, the rest buffered
            raise RuntimeError("upload interrupted")

    with pytest.raises(RuntimeError, match="upload interrupted"):
        fail_after_two_parts()
    client = boto3.client(
        "s3",
        endpoint_url=s3_options["client_kwargs"]["endpoint_url"],
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    uploads = client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])
    assert uploads == []
    assert client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("KeyCount") == 0
