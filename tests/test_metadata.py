"""dcp_impl.metadata: exact round trips, one test per MUST rule of docs/format.md, fuzzing."""

from __future__ import annotations

import copy
import itertools
import json
import pathlib
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch.distributed.checkpoint.filesystem import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.state_dict_saver import save

from dcp_impl import dtypes
from dcp_impl import metadata as fmt
from dcp_impl.errors import CheckpointError, InvalidMetadataError, UnknownDtypeError
from dcp_impl.metadata import ItemLocation, dumps, loads, validate
from dcp_impl.metadata._validate import _validate_storage_keys

# Property tests run unhurried: the shared machine is slow and hypothesis' deadline is a timing.
PROPERTY = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ---------------------------------------------------------------------------------

_TEXT = st.characters(codec="utf-8")  # any Unicode scalar value, never a lone surrogate
names = st.sampled_from(["w", "layer.0.weight", "a b", "x/y", "ünï.çødé", "", "🙂.bias"]) | st.text(
    _TEXT, max_size=10
)
counts = st.integers(0, 6) | st.sampled_from([2**31, 2**63 - 1])
# Every layout and memory format the format names (docs/format.md), spelled out independently.
_LAYOUT_NAMES = "strided sparse_coo sparse_csr sparse_csc sparse_bsr sparse_bsc _mkldnn jagged"
_LAYOUTS = [getattr(torch, name) for name in _LAYOUT_NAMES.split()]
_FORMATS = [torch.contiguous_format, torch.channels_last, torch.channels_last_3d]
_FORMATS.append(torch.preserve_format)
_PATH_PART = st.text(_TEXT.filter(lambda c: c not in "/\\\0"), min_size=1, max_size=6).filter(
    lambda p: p not in (".", "..") and not re.match(r"[A-Za-z]:", p)
)
file_paths = st.lists(_PATH_PART, min_size=1, max_size=3).map("/".join)
checksums = st.none() | st.builds(
    "{}:{}".format,
    st.sampled_from(["xxh3_64", "crc32c", "sha256"]),
    st.text("0123456789abcdef", min_size=1, max_size=32),
)
locations = st.builds(ItemLocation, file_paths, counts, counts, checksums)
properties = st.builds(
    TensorProperties,
    dtype=st.sampled_from([row.torch_dtype for row in dtypes.DTYPES]),
    layout=st.sampled_from(_LAYOUTS),
    requires_grad=st.booleans(),
    memory_format=st.sampled_from(_FORMATS),
    pin_memory=st.booleans(),
)


def shapes(*, max_ndim: int = 4) -> st.SearchStrategy[torch.Size]:
    """Shapes that shrink to 0-dim; dims of 0 (zero-size tensors) are common."""
    return st.lists(st.integers(0, 5), max_size=max_ndim).map(torch.Size)


@st.composite
def grid_chunks(draw: st.DrawFn, shape: torch.Size) -> list[ChunkStorageMetadata]:
    """A complete, disjoint grid of chunks of ``shape`` (empty chunks included), shuffled."""
    per_dim = []
    for n in shape:
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=2)))
        bounds = [0, *cuts, n]
        per_dim.append(list(itertools.pairwise(bounds)))
    chunks = [
        ChunkStorageMetadata(torch.Size(a for a, _ in cell), torch.Size(b - a for a, b in cell))
        for cell in itertools.product(*per_dim)
    ]
    return draw(st.permutations(chunks))


@given(shapes(max_ndim=3).flatmap(lambda shape: st.tuples(st.just(shape), grid_chunks(shape))))
def test_strategy_grid_chunks_tile_the_tensor(
    case: tuple[torch.Size, list[ChunkStorageMetadata]],
) -> None:
    """The strategy's own test, by brute force: every element lies in exactly one chunk."""
    shape, chunks = case
    owners = [
        sum(
            all(o <= p < o + n for p, o, n in zip(point, c.offsets, c.sizes, strict=True))
            for c in chunks
        )
        for point in itertools.product(*map(range, shape))
    ]
    assert owners == [1] * len(owners)
    assert all(len(c.offsets) == len(c.sizes) == len(shape) for c in chunks)


@st.composite
def tensor_entries(draw: st.DrawFn, *, valid: bool) -> TensorStorageMetadata:
    if valid:
        shape = draw(shapes())
        chunks = draw(grid_chunks(shape))
    else:  # any offsets and sizes of the right rank: the codec does not judge geometry
        shape = torch.Size(draw(st.lists(st.just(0) | counts, max_size=4)))
        dims = st.lists(counts, min_size=len(shape), max_size=len(shape)).map(torch.Size)
        chunks = draw(st.lists(st.builds(ChunkStorageMetadata, dims, dims), max_size=4))
    event(f"ndim={len(shape)}")
    event(f"zero-size={0 in shape}")
    return TensorStorageMetadata(draw(properties), shape, chunks)


obj_paths = st.lists(st.text(_TEXT, max_size=5) | st.integers(0, 2**63 - 1), max_size=4).map(tuple)


@st.composite
def metadatas(draw: st.DrawFn, *, max_entries: int = 4, valid: bool = False) -> Metadata:
    """Metadata whose storage keys name its own chunks; ``valid`` makes every layout complete."""
    entry = tensor_entries(valid=valid) | st.builds(BytesStorageMetadata)
    smd = draw(st.dictionaries(names, entry, max_size=max_entries))
    planner = draw(st.none() | st.fixed_dictionaries(dict.fromkeys(smd, obj_paths)))
    storage: dict[MetadataIndex, ItemLocation] | None = None
    if draw(st.booleans()):
        storage = {}
        for fqn, e in smd.items():
            keys = (
                [MetadataIndex(fqn)]
                if isinstance(e, BytesStorageMetadata)
                else [
                    MetadataIndex(fqn, c.offsets, draw(st.none() | st.just(i)))
                    for i, c in enumerate(e.chunks)
                ]
            )
            for key in keys:
                storage[key] = draw(locations)
    meta = st.builds(
        StorageMeta,
        st.none() | st.text(_TEXT, max_size=8),
        st.none() | st.text(_TEXT, max_size=8),
        st.none() | st.text(_TEXT, max_size=8),
        st.lists(st.text(_TEXT, max_size=5), max_size=2),
    )
    return Metadata(
        smd,
        planner_data=planner,
        storage_data=storage,
        storage_meta=draw(st.none() | meta),
        version=draw(st.none() | st.sampled_from(["1.0.0", "ü"])),
    )


# --- a fixed example, and helpers -----------------------------------------------------------------


def sample() -> Metadata:
    """A 4x4 float32 tensor in a 2x2 grid of chunks and a bytes entry (docs/format.md's example)."""
    corners = [(0, 0), (0, 2), (2, 0), (2, 2)]
    chunks = [ChunkStorageMetadata(torch.Size(c), torch.Size([2, 2])) for c in corners]
    tensor = TensorStorageMetadata(TensorProperties(torch.float32), torch.Size([4, 4]), chunks)
    storage = {
        MetadataIndex("w.0", c.offsets, i): ItemLocation(
            f"__{i}_0.distcp", 0, 16, "crc32c:0a1b2c3d"
        )
        for i, c in enumerate(chunks)
    }
    storage[MetadataIndex("step")] = ItemLocation("__0_0.distcp", 16, 5, None)
    return Metadata(
        {"w.0": tensor, "step": BytesStorageMetadata()},
        planner_data={"w.0": ("w", 0), "step": ("step",)},
        storage_data=storage,
        storage_meta=StorageMeta("/ckpt/run1", "save-1", None, []),
        version="1.0.0",
    )


def sample_doc() -> dict[str, Any]:
    return json.loads(dumps(sample()))


def v1_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A version-2 document rewritten as version 1 wrote it (one object per chunk and item)."""
    names = list(doc["state_dict_metadata"])
    chunk_offsets: dict[str, list[list[int]]] = {}
    for fqn, entry in doc["state_dict_metadata"].items():
        if entry["kind"] == "tensor":
            table, ndim = entry["chunks"], len(entry["size"])
            flat = table["offsets"]
            offsets = [flat[i * ndim : (i + 1) * ndim] for i in range(len(table["sizes"]))]
            sizes = [list(table["size_table"][ref]) for ref in table["sizes"]]
            entry["chunks"] = [
                {"offsets": o, "sizes": s} for o, s in zip(offsets, sizes, strict=True)
            ]
            chunk_offsets[fqn] = offsets
    columns = doc["storage_data"]
    if columns is not None:
        rows = zip(*(columns[k] for k in ("entry", "chunk", "index", "file")), strict=True)
        doc["storage_data"] = [
            {
                "index": {
                    "fqn": names[e],
                    "offset": None if c is None else chunk_offsets[names[e]][c],
                    "index": i,
                },
                "location": {
                    "path": columns["files"][f],
                    "offset": columns["offset"][k],
                    "length": columns["length"][k],
                    "checksum": columns["checksum"][k],
                },
            }
            for k, (e, c, i, f) in enumerate(rows)
        ]
    return doc | {"format_version": 1}


def sample_doc_v1() -> dict[str, Any]:
    return v1_document(sample_doc())


def rejects(document: object, path: str, *fragments: str) -> InvalidMetadataError:
    """Assert loads rejects ``document`` (a dict is JSON-encoded first) at ``path``."""
    text = json.dumps(document) if isinstance(document, dict) else document
    with pytest.raises(InvalidMetadataError) as info:
        loads(text)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"{path}: ") or path in message, message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def edited(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    doc = sample_doc()
    edit(doc)
    return doc


def edited_v1(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """The sample as version 1 wrote it, edited: version 1 documents are still read."""
    doc = sample_doc_v1()
    edit(doc)
    return doc


# --- round trip ----------------------------------------------------------------------------------


def assert_exact(decoded: Metadata, original: Metadata) -> None:
    """Equality plus what dataclass equality misses: torch.Size, tuples, MetadataIndex.index."""
    assert decoded == original
    for entry in decoded.state_dict_metadata.values():
        if isinstance(entry, TensorStorageMetadata):
            assert type(entry.size) is torch.Size
            assert all(
                type(c.offsets) is torch.Size and type(c.sizes) is torch.Size for c in entry.chunks
            )
    if original.planner_data is not None:
        assert decoded.planner_data is not None
        for fqn, path in original.planner_data.items():
            got = decoded.planner_data[fqn]
            assert type(got) is tuple
            assert [type(p) for p in got] == [type(p) for p in path]
    if original.storage_data is not None:
        got_keys = [(k.fqn, k.offset, k.index) for k in decoded.storage_data]
        assert got_keys == [(k.fqn, k.offset, k.index) for k in original.storage_data]


@PROPERTY
@given(metadatas())
def test_roundtrip_is_exact(md: Metadata) -> None:
    text = dumps(md)
    assert_exact(loads(text), md)
    assert loads(text.encode("utf-8")) == md


@PROPERTY
@given(metadatas())
def test_version_1_documents_still_decode(md: Metadata) -> None:
    """What version 1 wrote for any Metadata decodes to that Metadata, as it always did."""
    text = json.dumps(v1_document(json.loads(dumps(md))), ensure_ascii=False)
    assert_exact(loads(text), md)
    assert dumps(loads(text)) == dumps(md)


@PROPERTY
@given(metadatas())
def test_encoding_is_deterministic(md: Metadata) -> None:
    text = dumps(md)
    # (no deepcopy here: torch's TensorProperties cannot pickle channels_last_3d; we can)
    assert dumps(md) == text
    assert dumps(loads(text)) == text


def test_roundtrip_every_dtype_layout_and_memory_format() -> None:
    entries: dict[str, TensorStorageMetadata | BytesStorageMetadata] = {}
    for i, (row, lay, mf) in enumerate(itertools.zip_longest(dtypes.DTYPES, _LAYOUTS, _FORMATS)):
        props = TensorProperties(
            row.torch_dtype if row else torch.float32,
            lay or torch.strided,
            requires_grad=i % 2 == 0,
            memory_format=mf or torch.contiguous_format,
            pin_memory=i % 3 == 0,
        )
        entries[f"t{i}"] = TensorStorageMetadata(
            props, torch.Size([]), [ChunkStorageMetadata(torch.Size([]), torch.Size([]))]
        )
    md = Metadata(entries)
    assert_exact(loads(dumps(md)), md)


def test_roundtrip_real_torch_save_metadata(tmp_path: pathlib.Path) -> None:
    """Metadata made by torch's own planner (flatten mapping with list indices) round-trips."""

    state = {
        "model": {"layers": [{"w": torch.ones(3, 2)}, {"w": torch.zeros(0)}]},
        "step": 7,
        "s": torch.tensor(1.5),
    }
    save(state, storage_writer=FileSystemWriter(tmp_path), no_dist=True)
    md = FileSystemReader(tmp_path).read_metadata()
    with pytest.raises(
        InvalidMetadataError,
        match=r"\$\.storage_data\[0\]\.location: expected an ItemLocation value, found _Stora",
    ):
        dumps(md)  # torch's own storage records are not ours to encode
    md.storage_data = None
    assert md.storage_meta is not None
    assert isinstance(md.storage_meta.checkpoint_id, pathlib.Path)
    md.storage_meta.checkpoint_id = str(md.storage_meta.checkpoint_id)  # how a PathLike decodes
    assert md.planner_data["model.layers.0.w"] == ("model", "layers", 0, "w")
    assert_exact(loads(dumps(md)), md)
    validate(md)


def test_storage_meta_pathlike_checkpoint_id_is_stored_as_str() -> None:
    md = Metadata({}, storage_meta=StorageMeta(pathlib.PurePosixPath("/ckpt/a")))
    assert loads(dumps(md)).storage_meta == StorageMeta("/ckpt/a")


def test_loads_accepts_str_bytes_and_bytearray() -> None:
    text = dumps(sample())
    assert loads(text) == loads(text.encode()) == loads(bytearray(text.encode())) == sample()


def test_many_chunks_roundtrip() -> None:
    """A large layout goes through (no timing asserted; 100k chunks are measured by hand)."""
    n = 20_000
    chunks = [ChunkStorageMetadata(torch.Size([i, 0]), torch.Size([1, 8])) for i in range(n)]
    md = Metadata(
        {"w": TensorStorageMetadata(TensorProperties(torch.bfloat16), torch.Size([n, 8]), chunks)}
    )
    assert loads(dumps(md)) == md


def row_sharded(tensors: int, shards: int) -> Metadata:
    """bf16 tensors of ``shards`` row shards, located and checksummed as dcp_impl-fs does."""
    entries: dict[str, TensorStorageMetadata | BytesStorageMetadata] = {}
    storage = {}
    for t in range(tensors):
        fqn = f"model.layers.{t}.mlp.weight"
        chunks = [
            ChunkStorageMetadata(torch.Size([s * 8, 0]), torch.Size([8, 4096]))
            for s in range(shards)
        ]
        for s, c in enumerate(chunks):
            digest = f"xxh3_64:{(t * shards + s) * 0x9E3779B97F4A7C15 % 2**64:016x}"
            name = f"data-{s:032x}-r{s}-0.bin"
            storage[MetadataIndex(fqn, c.offsets, s)] = ItemLocation(name, t * 65536, 65536, digest)
        size = torch.Size([shards * 8, 4096])
        entries[fqn] = TensorStorageMetadata(TensorProperties(torch.bfloat16), size, chunks)
    return Metadata(entries, storage_data=storage)


def test_six_million_chunks_fit_the_size_limit() -> None:
    """docs/format.md §1.7: the measured layout's bytes per chunk, times 6M, fit the limit."""
    md = row_sharded(10, 1000)  # the layout of `python -m perf.codec`
    per_chunk = len(dumps(md).encode()) / 10_000
    assert per_chunk < 70  # the §1.7 figure (65), with the margin of longer offsets
    assert 6_000_000 * per_chunk < fmt.MAX_METADATA_BYTES / 2


def test_compact_chunk_table_edge_cases() -> None:
    """0-dim chunks (no offsets at all), empty, replicated and irregular chunks, no chunks."""
    chunk = lambda o, s: ChunkStorageMetadata(torch.Size(o), torch.Size(s))  # noqa: E731
    props = TensorProperties(torch.float16)
    ragged = [chunk([0, 0], [2, 3]), chunk([2, 0], [3, 3]), chunk([5, 0], [0, 3])]
    entries = {
        "scalar": TensorStorageMetadata(props, torch.Size([]), [chunk([], [])] * 3),
        "ragged": TensorStorageMetadata(props, torch.Size([5, 3]), ragged),
        "replicated": TensorStorageMetadata(props, torch.Size([4]), [chunk([0], [4])] * 2),
        "none": TensorStorageMetadata(props, torch.Size([0]), []),
    }
    storage = {
        MetadataIndex(fqn, c.offsets, i): ItemLocation("f", i, 0)
        for fqn, e in entries.items()
        for i, c in enumerate(e.chunks)
    }
    md = Metadata(entries, storage_data=storage)  # type: ignore[arg-type]
    doc = json.loads(dumps(md))
    tables = {fqn: e["chunks"] for fqn, e in doc["state_dict_metadata"].items()}
    assert tables["scalar"] == {"offsets": [], "sizes": [0, 0, 0], "size_table": [[]]}
    assert tables["ragged"]["size_table"] == [[2, 3], [3, 3], [0, 3]]
    assert tables["replicated"] == {"offsets": [0, 0], "sizes": [0, 0], "size_table": [[4]]}
    assert tables["none"] == {"offsets": [], "sizes": [], "size_table": []}
    # equal offsets make one MetadataIndex: its chunk is the first with them
    assert doc["storage_data"]["chunk"] == [0, 0, 1, 2, 0]
    decoded = loads(dumps(md))
    assert_exact(decoded, md)
    chunks = decoded.state_dict_metadata["ragged"].chunks  # type: ignore[union-attr]
    keys = [k for k in decoded.storage_data if k.fqn == "ragged"]
    assert [k.offset is c.offsets for k, c in zip(keys, chunks, strict=True)] == [True] * 3
    scalars = decoded.state_dict_metadata["scalar"].chunks  # type: ignore[union-attr]
    assert scalars[0].sizes is scalars[2].sizes  # one torch.Size per distinct row


@PROPERTY
@given(st.data())
def test_compact_encoding_of_repeated_empty_and_0dim_chunks(data: st.DataObject) -> None:
    """Chunks drawn from a small pool: repeats (replicated), empty and 0-dim chunks are common."""
    shape = data.draw(shapes(max_ndim=3), label="shape")
    dims = st.lists(st.integers(0, 3), min_size=len(shape), max_size=len(shape)).map(torch.Size)
    pool = data.draw(st.lists(st.builds(ChunkStorageMetadata, dims, dims), min_size=1, max_size=3))
    chunks = data.draw(st.lists(st.sampled_from(pool), max_size=8), label="chunks")
    event(f"distinct sizes={len({tuple(c.sizes) for c in chunks})}, chunks={len(chunks)}")
    entry = TensorStorageMetadata(TensorProperties(), shape, chunks)
    storage = {
        MetadataIndex("t", c.offsets, i): ItemLocation("f", i, 1) for i, c in enumerate(chunks)
    }
    storage[MetadataIndex("b")] = ItemLocation("g", 0, 1)
    md = Metadata({"t": entry, "b": BytesStorageMetadata()}, storage_data=storage)
    text = dumps(md)
    assert_exact(loads(text), md)
    table = json.loads(text)["state_dict_metadata"]["t"]["chunks"]
    assert len(table["offsets"]) == len(chunks) * len(shape)
    assert sorted(map(tuple, table["size_table"])) == sorted({tuple(c.sizes) for c in chunks})


def test_legacy_tensor_properties_save_and_load(tmp_path: pathlib.Path) -> None:
    """torch's legacy sharded-tensor TensorProperties is written as the checkpoint one."""
    from torch.distributed._shard.sharded_tensor.metadata import TensorProperties as Legacy
    from torch.distributed.checkpoint import DefaultSavePlanner, load

    import dcp_impl

    class LegacyPlanner(DefaultSavePlanner):
        def create_global_plan(self, all_plans: Any) -> Any:
            plans, md = super().create_global_plan(all_plans)
            for entry in md.state_dict_metadata.values():
                if isinstance(entry, TensorStorageMetadata):
                    old = entry.properties
                    entry.properties = Legacy(old.dtype, old.layout, old.requires_grad)
            return plans, md

    state = {"w": torch.arange(6.0).reshape(2, 3)}
    writer = dcp_impl.FileSystemWriter(str(tmp_path))
    save(state, storage_writer=writer, planner=LegacyPlanner(), no_dist=True)
    target = {"w": torch.zeros(2, 3)}
    load(target, storage_reader=dcp_impl.FileSystemReader(str(tmp_path)), no_dist=True)
    assert torch.equal(target["w"], state["w"])
    md = dcp_impl.FileSystemReader(str(tmp_path)).read_metadata()
    assert md.state_dict_metadata["w"].properties == TensorProperties(torch.float32)


# --- one test per MUST rule of docs/format.md ---------------------------------------------------


def test_rule_utf8() -> None:
    text = dumps(sample()).encode()
    rejects(text.replace(b'"step"', b'"st\xffp"', 1), "metadata", "expected UTF-8")
    rejects(b"\xef\xbb\xbf" + text, "metadata", "expected a JSON document")  # a BOM


def test_rule_size_limit_checked_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    text = dumps(sample())
    monkeypatch.setattr(fmt, "MAX_METADATA_BYTES", len(text.encode()) - 1)
    calls: list[object] = []
    monkeypatch.setattr(json, "loads", lambda *a, **k: calls.append(a))
    for document in (text, text.encode(), "[" * (len(text) + 1)):
        rejects(document, "metadata", "MAX_METADATA_BYTES", f"found {len(document)}")
    assert calls == []  # refused without parsing
    wide = "é" * (len(text) // 2 + 1)  # fewer characters than the limit, more UTF-8 bytes
    rejects(wide, "metadata", f"found {2 * len(wide)}")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_rule_no_nonfinite_literals(literal: str) -> None:
    text = json.dumps(sample_doc_v1(), separators=(",", ":"))
    rejects(text.replace('"offset":16', f'"offset":{literal}', 1), "metadata", literal)
    text = dumps(sample()).replace('"length":[16', f'"length":[{literal}', 1)
    rejects(text, "metadata", f"found the literal {literal}")


def test_rule_unique_keys() -> None:
    text = dumps(sample()).replace('{"kind":"bytes"}', '{"kind":"bytes","kind":"bytes"}')
    rejects(text, '$.state_dict_metadata["step"]', 'found "kind" twice')
    rejects('{"format":"x","format":"x"}', "$", 'found "format" twice')


def test_rule_nesting_is_bounded() -> None:
    rejects("[" * 100_000 + "]" * 100_000, "metadata", "nesting too deep")


@pytest.mark.parametrize("document", [[], "x", 1, None])
def test_rule_top_level_is_an_object(document: object) -> None:
    rejects(json.dumps(document), "$", "expected a JSON object")


def test_rule_format_name() -> None:
    rejects(
        edited(lambda d: d.update(format="other")),
        "$.format",
        "expected \"dcp_impl.metadata\", found string 'other'",
    )
    rejects(edited(lambda d: d.pop("format")), "$.format", "found no such key")


def test_rule_format_version() -> None:
    rejects(
        edited(lambda d: d.update(format_version=3)),
        "$.format_version",
        "expected one of [1, 2]",
        "found 3",
        "newer dcp_impl",
    )
    rejects(
        edited(lambda d: d.update(format_version=0)), "$.format_version", "found 0: no dcp_impl"
    )
    rejects(edited(lambda d: d.update(format_version=True)), "$.format_version", "found true")
    rejects(edited(lambda d: d.update(format_version="1")), "$.format_version", "found string '1'")
    # a newer version is reported as such even when it adds keys this reader does not know
    rejects(edited(lambda d: d.update(format_version=3, extra=1)), "$.format_version", "newer")
    # each version's own shape: a version-1 body under version 2 is refused, and the reverse
    rejects(sample_doc_v1() | {"format_version": 2}, '$.state_dict_metadata["w.0"].chunks')
    rejects(sample_doc() | {"format_version": 1}, '$.state_dict_metadata["w.0"].chunks')


@pytest.mark.parametrize(
    ("edit", "path", "found"),
    [
        (lambda d: d.update(extra=1), "$", 'unknown key "extra"'),
        (lambda d: d.pop("storage_meta"), "$", 'the key "storage_meta", found it missing'),
        (
            lambda d: d["state_dict_metadata"]["w.0"].update(dtype="f"),
            '$.state_dict_metadata["w.0"]',
            'unknown key "dtype"',
        ),
        (
            lambda d: d["state_dict_metadata"]["w.0"]["chunks"].pop("size_table"),
            '$.state_dict_metadata["w.0"].chunks',
            '"size_table", found it missing',
        ),
        (
            lambda d: d["storage_data"].update(crc=[]),
            "$.storage_data",
            'unknown key "crc"',
        ),
        (
            lambda d: d["storage_data"].pop("index"),
            "$.storage_data",
            '"index", found it missing',
        ),
        (
            lambda d: d["state_dict_metadata"]["step"].update(size=[]),
            '$.state_dict_metadata["step"]',
            'unknown key "size"',
        ),
    ],
)
def test_rule_exact_keys(edit: Callable[[dict[str, Any]], object], path: str, found: str) -> None:
    rejects(edited(edit), path, found)


@pytest.mark.parametrize(
    ("edit", "path", "found"),
    [
        (
            lambda d: d["state_dict_metadata"]["w.0"]["chunks"][1].pop("sizes"),
            '$.state_dict_metadata["w.0"].chunks[1]',
            '"sizes", found it missing',
        ),
        (
            lambda d: d["storage_data"][2]["location"].update(crc=""),
            "$.storage_data[2].location",
            'unknown key "crc"',
        ),
        (
            lambda d: d["storage_data"][2]["index"].pop("index"),
            "$.storage_data[2].index",
            '"index", found it missing',
        ),
    ],
)
def test_rule_exact_keys_version_1(
    edit: Callable[[dict[str, Any]], object], path: str, found: str
) -> None:
    rejects(edited_v1(edit), path, found)


@pytest.mark.parametrize(
    ("value", "found"),
    [
        (True, "found true"),
        (1.0, "found number 1.0"),
        (-1, "found integer -1"),
        (2**63, f"found integer {2**63}"),
        ("2", "found string '2'"),
        (None, "found null"),
    ],
)
def test_rule_integers(value: object, found: str) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["state_dict_metadata"]["w.0"]["chunks"][3]["sizes"][1] = value

    rejects(
        edited_v1(edit),
        '$.state_dict_metadata["w.0"].chunks[3].sizes[1]',
        "expected an integer in [0, 2**63-1]",
        found,
    )
    rejects(
        edited_v1(lambda d: d["storage_data"][0]["location"].update(length=value)),
        "$.storage_data[0].location.length",
        found,
    )

    def edit_v2(d: dict[str, Any]) -> None:
        d["state_dict_metadata"]["w.0"]["chunks"]["offsets"][5] = value

    rejects(
        edited(edit_v2),
        '$.state_dict_metadata["w.0"].chunks.offsets[5]',
        "expected an integer in [0, 2**63-1]",
        found,
    )
    rejects(
        edited(lambda d: d["state_dict_metadata"]["w.0"]["chunks"]["size_table"][0].append(value)),
        '$.state_dict_metadata["w.0"].chunks.size_table[0]',
    )
    for column in ("offset", "length"):
        rejects(
            edited(lambda d: d["storage_data"][column].__setitem__(4, value)),  # noqa: B023
            f"$.storage_data.{column}[4]",
            "expected an integer in [0, 2**63-1]",
            found,
        )
    rejects(
        '{"format":"dcp_impl.metadata","format_version":1e0}',
        "$.format_version",
        "found number 1.0",
    )
    rejects("9" * 5000, "metadata", "expected a JSON document")  # beyond Python's int-parsing limit


def test_rule_strings() -> None:
    text = dumps(sample()).replace('"save-1"', '"\\ud800"')
    rejects(text, "$.storage_meta.save_id", "no lone surrogates")
    rejects(
        dumps(sample()).replace('"w.0":{', '"\\udfff":{', 1),
        '$.state_dict_metadata["\\udfff"]',
        "no lone surrogates",
    )
    rejects(
        edited(lambda d: d["storage_meta"]["modules"].append(3)),
        "$.storage_meta.modules[0]",
        "expected a string, found integer 3",
    )
    rejects(edited(lambda d: d.update(version=1)), "$.version", "expected a string")


def test_rule_kind_tag() -> None:
    rejects(
        edited(lambda d: d["state_dict_metadata"]["step"].update(kind="object")),
        '$.state_dict_metadata["step"].kind',
        'expected kind "tensor" or "bytes", found string \'object\'',
    )
    rejects(
        edited(lambda d: d["state_dict_metadata"]["step"].pop("kind")),
        '$.state_dict_metadata["step"].kind',
        "found no such key",
    )


def test_rule_dtype_names() -> None:
    doc = edited(lambda d: d["state_dict_metadata"]["w.0"]["properties"].update(dtype="float128"))
    err = rejects(doc, '$.state_dict_metadata["w.0"].properties.dtype', "found string 'float128'")
    assert isinstance(err.__cause__, UnknownDtypeError)
    rejects(
        edited(
            lambda d: d["state_dict_metadata"]["w.0"]["properties"].update(dtype="torch.float32")
        ),
        ".properties.dtype",
    )


def test_rule_layout_and_memory_format_names() -> None:
    props = lambda d: d["state_dict_metadata"]["w.0"]["properties"]  # noqa: E731
    rejects(
        edited(lambda d: props(d).update(layout="torch.strided")),
        '$.state_dict_metadata["w.0"].properties.layout',
        "expected a layout in",
    )
    rejects(
        edited(lambda d: props(d).update(memory_format="channels_first")),
        ".properties.memory_format",
        "channels_first",
    )
    rejects(
        edited(lambda d: props(d).update(pin_memory=0)),
        ".properties.pin_memory",
        "expected true or false, found integer 0",
    )


def test_rule_ndim() -> None:
    w = lambda d: d["state_dict_metadata"]["w.0"]  # noqa: E731
    rejects(
        edited(lambda d: w(d).update(size=[1] * 65)),
        '$.state_dict_metadata["w.0"].size',
        "at most 64 dimensions, found 65",
    )
    rejects(
        edited_v1(lambda d: w(d)["chunks"][2].update(offsets=[0, 0, 0])),
        '$.state_dict_metadata["w.0"].chunks[2].offsets',
        "2 dimensions (the tensor's), found 3",
    )
    rejects(edited_v1(lambda d: w(d)["chunks"][0].update(sizes=[2])), ".chunks[0].sizes", "found 1")
    rejects(
        edited_v1(lambda d: w(d).update(chunks={})),
        '$.state_dict_metadata["w.0"].chunks',
        "expected a JSON array",
    )
    rejects(
        edited(lambda d: w(d)["chunks"]["offsets"].append(0)),
        '$.state_dict_metadata["w.0"].chunks.offsets',
        "expected 2 integers per chunk (4 chunks in .sizes), found 9",
    )
    rejects(
        edited(lambda d: w(d)["chunks"]["size_table"].append([2])),
        '$.state_dict_metadata["w.0"].chunks.size_table[1]',
        "2 dimensions (the tensor's), found 1",
    )
    rejects(
        edited(lambda d: w(d)["chunks"]["sizes"].__setitem__(2, 1)),
        '$.state_dict_metadata["w.0"].chunks.sizes[2]',
        "expected an index into .size_table (0..0), found integer 1",
    )
    rejects(
        edited(lambda d: w(d).update(chunks=[])),
        '$.state_dict_metadata["w.0"].chunks',
        "expected a JSON object",
    )
    md = Metadata({"t": TensorStorageMetadata(TensorProperties(), torch.Size([1] * 64), [])})
    assert loads(dumps(md)) == md


def test_rule_planner_data() -> None:
    rejects(edited(lambda d: d.update(planner_data=[])), "$.planner_data", "expected a JSON object")
    rejects(
        edited(lambda d: d["planner_data"].update(x="a")),
        '$.planner_data["x"]',
        "expected a JSON array of strings and integers",
    )
    rejects(
        edited(lambda d: d["planner_data"]["w.0"].append(1.5)),
        '$.planner_data["w.0"][2]',
        "found number 1.5",
    )
    rejects(
        edited(lambda d: d["planner_data"]["w.0"].append(-1)),
        '$.planner_data["w.0"][2]',
        "found integer -1",
    )


def test_rule_storage_items_unique() -> None:
    def duplicate(d: dict[str, Any]) -> None:
        d["storage_data"].append(
            copy.deepcopy(d["storage_data"][1]) | {"location": d["storage_data"][0]["location"]}
        )
        d["storage_data"][-1]["index"]["index"] = None  # index is a hint, not part of the identity

    rejects(edited_v1(duplicate), "$.storage_data[5].index", "found those of item [1] again")
    rejects(
        edited_v1(lambda d: d.update(storage_data={})),
        "$.storage_data",
        "expected null or a JSON array",
    )

    def duplicate_v2(d: dict[str, Any]) -> None:
        for column in d["storage_data"].values():
            column.append(column[1])
        d["storage_data"]["index"][-1] = None

    rejects(edited(duplicate_v2), "$.storage_data.chunk[5]", "found those of item [1] again")
    rejects(edited(lambda d: d.update(storage_data=[])), "$.storage_data", "expected a JSON object")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("path", "/etc/passwd", "relative"),
        ("path", "../x", "'..'"),
        ("path", "a//b", "empty"),
        ("path", "a/./b", "'.'"),
        ("path", "a\\b", "relative"),
        ("path", "a\0b", "relative"),
        ("path", "C:x", "relative"),
        ("path", "", "relative"),
        ("path", 7, "expected a string"),
        ("offset", -1, "found integer -1"),
        ("checksum", "XXH3:00", "<algorithm>:<lowercase hex>"),
        ("checksum", "crc32c:0A", "<algorithm>:<lowercase hex>"),
        ("checksum", "crc32c:", "<algorithm>:<lowercase hex>"),
        ("checksum", 0, "expected a string"),
    ],
)
def test_rule_item_location(field: str, value: object, expected: str) -> None:
    rejects(
        edited_v1(lambda d: d["storage_data"][0]["location"].update({field: value})),
        f"$.storage_data[0].location.{field}",
        expected,
    )
    column = {"path": "files"}.get(field, field)
    rejects(
        edited(lambda d: d["storage_data"][column].__setitem__(0, value)),
        f"$.storage_data.{column}[0]",
        expected,
    )
    fields = {"path": "f", "offset": 0, "length": 0, "checksum": None} | {field: value}
    with pytest.raises(InvalidMetadataError, match=rf"^ItemLocation\.{field}: expected"):
        ItemLocation(**fields)  # type: ignore[arg-type]


def test_rule_storage_index() -> None:
    rejects(
        edited_v1(lambda d: d["storage_data"][4]["index"].update(offset=[-1])),
        "$.storage_data[4].index.offset[0]",
        "found integer -1",
    )
    rejects(
        edited_v1(lambda d: d["storage_data"][4]["index"].update(index=False)),
        "$.storage_data[4].index.index",
        "found false",
    )
    rejects(
        edited_v1(lambda d: d["storage_data"][4].update(index=[])),
        "$.storage_data[4].index",
        "expected a JSON object",
    )


def test_rule_storage_columns() -> None:
    def put(column: str, i: int, value: object) -> dict[str, Any]:
        return edited(lambda d: d["storage_data"][column].__setitem__(i, value))

    rejects(put("index", 4, False), "$.storage_data.index[4]", "found false")
    rejects(
        put("entry", 0, 2),
        "$.storage_data.entry[0]",
        "expected an index into state_dict_metadata (0..1), found integer 2",
    )
    rejects(
        put("chunk", 1, 4),
        "$.storage_data.chunk[1]",
        "expected an index into the tensor's 4 chunks (0..3), found integer 4",
    )
    rejects(put("chunk", 0, None), "$.storage_data.chunk[0]", "tensor's 4 chunks", "found null")
    rejects(put("chunk", 4, 0), "$.storage_data.chunk[4]", "expected null (the entry is bytes)")
    rejects(put("file", 4, 4), "$.storage_data.file[4]", "an index into .files (0..3)")
    rejects(
        edited(lambda d: d["storage_data"]["length"].pop()),
        "$.storage_data.length",
        "expected 5 values (one per item, as in .entry), found 4",
    )
    rejects(
        edited(lambda d: d["storage_data"].update(checksum={})),
        "$.storage_data.checksum",
        "expected a JSON array",
    )


def test_rule_storage_meta() -> None:
    rejects(edited(lambda d: d.update(storage_meta=[])), "$.storage_meta", "expected a JSON object")
    rejects(
        edited(lambda d: d["storage_meta"].update(modules="m")),
        "$.storage_meta.modules",
        "expected a JSON array of strings",
    )
    rejects(
        edited(lambda d: d["storage_meta"].update(checkpoint_id=1)),
        "$.storage_meta.checkpoint_id",
        "expected a string",
    )


class _Custom:
    pass


@pytest.mark.parametrize(
    ("change", "path", "found"),
    [
        (lambda m: setattr(m, "planner_data", _Custom()), "$.planner_data", "_Custom"),
        (
            lambda m: setattr(m, "planner_data", {"w.0": ["w", 0]}),
            '$.planner_data["w.0"]',
            "expected a tuple of str | int, found array",
        ),
        (
            lambda m: setattr(m, "planner_data", {"w.0": ("w", -1)}),
            '$.planner_data["w.0"][1]',
            "found integer -1",
        ),
        (
            lambda m: setattr(m, "planner_data", {"w.0": ("w", 1.0)}),
            '$.planner_data["w.0"][1]',
            "expected a string, found number 1.0",
        ),
        (
            lambda m: setattr(m, "planner_data", {1: ("w",)}),
            "$.planner_data[integer 1]",
            "expected a string",
        ),
        (lambda m: setattr(m, "storage_data", "__0_"), "$.storage_data", "found string '__0_'"),
        (
            lambda m: m.storage_data.update({"k": ItemLocation("f", 0, 0)}),
            "$.storage_data[5].index",
            "expected a MetadataIndex key",
        ),
        (
            lambda m: m.storage_data.update({MetadataIndex("k"): ("f", 0)}),
            "$.storage_data[5].location",
            "expected an ItemLocation value",
        ),
        (
            lambda m: m.storage_data.update({MetadataIndex("k"): ItemLocation("f", 0, 0)}),
            "$.storage_data[5].index.fqn",
            "expected the fqn of a state_dict_metadata entry, found string 'k'",
        ),
        (
            lambda m: m.storage_data.update(
                {MetadataIndex("w.0", [1, 1]): ItemLocation("f", 0, 0)}
            ),
            "$.storage_data[5].index.offset",
            "expected the offsets of one of the tensor's 4 chunks",
        ),
        (
            lambda m: m.storage_data.update({MetadataIndex("step", [0]): ItemLocation("f", 0, 0)}),
            "$.storage_data[5].index.offset",
            "expected None (the entry is bytes)",
        ),
        (
            lambda m: setattr(m.state_dict_metadata["w.0"].properties, "dtype", torch.qint8),
            '$.state_dict_metadata["w.0"].properties.dtype',
            "torch.qint8",
        ),
        (
            lambda m: setattr(m.state_dict_metadata["w.0"], "size", [4, 4]),
            '$.state_dict_metadata["w.0"].size',
            "expected a tuple",
        ),
        (
            lambda m: setattr(m.state_dict_metadata["w.0"].chunks[3], "sizes", (2, True)),
            '$.state_dict_metadata["w.0"].chunks[3].sizes[1]',
            "found true",
        ),
        (
            lambda m: m.state_dict_metadata.update(x=torch.ones(1)),
            '$.state_dict_metadata["x"]',
            "expected TensorStorageMetadata or BytesStorageMetadata, found Tensor",
        ),
        (
            lambda m: setattr(m, "storage_meta", StorageMeta(b"/ckpt")),  # type: ignore[arg-type]
            "$.storage_meta.checkpoint_id",
            "found bytes",
        ),
        (lambda m: setattr(m, "version", 1), "$.version", "found integer 1"),
    ],
)
def test_rule_dumps_refuses_what_it_cannot_encode(
    change: Callable[[Metadata], object], path: str, found: str
) -> None:
    md = sample()
    change(md)
    with pytest.raises(InvalidMetadataError) as info:
        dumps(md)
    assert str(info.value).startswith(f"cannot encode Metadata: {path}: "), str(info.value)
    assert found in str(info.value)


def test_rule_loads_rejects_non_text() -> None:
    with pytest.raises(InvalidMetadataError, match="expected str or bytes, found int"):
        loads(12)  # type: ignore[arg-type]


# --- fuzzing: hostile input only ever ends in InvalidMetadataError ------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([-1, 2**63, 2**63 - 1, -(2**63), 10**40])
    | st.floats()
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def _nodes(node: object, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON tree, the root included."""
    found = [path]
    children = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in children:
        found += _nodes(child, (*path, key))
    return found


@st.composite
def hostile_documents(draw: st.DrawFn) -> bytes:
    """A valid document with a few tree edits (delete, replace, retype, rename) and byte edits."""
    doc: Any = json.loads(dumps(draw(st.just(sample()) | metadatas(max_entries=2))))
    if draw(st.booleans()):
        doc = v1_document(doc)
        event("version 1")
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_nodes(doc)))
        if not path:
            doc = draw(json_values)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key, old = path[-1], parent[path[-1]]
        op = draw(st.sampled_from(["delete", "replace", "retype", "rename"]))
        event(f"op={op}")
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(json_values)
        elif op == "retype":
            parent[key] = draw(st.sampled_from([[old], {"v": old}, str(old), None, True, 1, 1.0]))
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=4))] = parent.pop(key)
    data = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["truncate", "flip", "insert"]))
        event(f"bytes={edit}")
        if edit == "truncate":
            data = data[:at]
        elif edit == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        else:
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


@settings(PROPERTY, max_examples=200)
@given(hostile_documents())
def test_fuzz_hostile_documents_raise_only_invalid_metadata(data: bytes) -> None:
    error: InvalidMetadataError | None = None
    try:
        md = loads(data)
    except InvalidMetadataError as err:
        error = err
    if error is not None:
        event("rejected")
        assert str(error).startswith(("$", "metadata: ")), error  # says where, or why unparsable
        return
    event("accepted")
    assert_reencodable(md)
    try:
        validate(md)
    except InvalidMetadataError:
        event("accepted, then invalid layout")


def assert_reencodable(md: Metadata) -> None:
    """Whatever is accepted is a faithful, re-encodable Metadata.

    The one exception: a version-1 document could hold storage keys naming no entry or chunk,
    which version 2 cannot write (it refers to them); validate() refuses those keys too.
    """
    try:
        text = dumps(md)
    except InvalidMetadataError as err:
        refused = str(err)
    else:
        assert loads(text) == md
        return
    assert re.match(r"cannot encode Metadata: \$\.storage_data\[\d+\]\.index\.", refused)
    with pytest.raises(InvalidMetadataError, match=r"^storage_data key"):
        _validate_storage_keys(md.state_dict_metadata, md.storage_data)  # validate()'s last check


_HOSTILE = [None, True, 0, -1, 2**63, 1.5, "", "x", [], [None], [-1], {}, {"kind": "bytes"}]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("replacement", [*_HOSTILE, "delete"], ids=repr)
def test_fuzz_every_node_of_the_example_replaced_or_deleted(
    replacement: object, version: int
) -> None:
    """Exhaustive companion to the random fuzz: each node of sample() gets each hostile value."""
    make = sample_doc if version == 2 else sample_doc_v1
    for path in _nodes(make())[1:]:
        doc = make()
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if replacement == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(replacement)
        try:
            md = loads(json.dumps(doc))
        except InvalidMetadataError:
            continue
        assert_reencodable(md)


def test_fuzz_errors_are_checkpoint_errors() -> None:
    """The promise the fuzz test relies on, stated once: the error is in the package's tree."""
    assert issubclass(InvalidMetadataError, CheckpointError)
    assert issubclass(InvalidMetadataError, ValueError)


# --- validate() ---------------------------------------------------------------------------------


def tensor(size: tuple[int, ...], *chunks: tuple[tuple[int, ...], tuple[int, ...]]) -> Metadata:
    parts = [ChunkStorageMetadata(torch.Size(o), torch.Size(s)) for o, s in chunks]
    return Metadata({"w.0": TensorStorageMetadata(TensorProperties(), torch.Size(size), parts)})


@PROPERTY
@given(metadatas(valid=True))
def test_validate_accepts_complete_disjoint_layouts(md: Metadata) -> None:
    validate(md)
    validate(loads(dumps(md)))


@PROPERTY
@given(tensor_entries(valid=True), st.data())
def test_validate_reports_a_dropped_chunk_as_a_hole(
    entry: TensorStorageMetadata, data: st.DataObject
) -> None:
    full = [i for i, c in enumerate(entry.chunks) if all(c.sizes)]
    if not full:
        return
    dropped = entry.chunks.pop(data.draw(st.sampled_from(full)))
    md = Metadata({"t": entry})
    with pytest.raises(InvalidMetadataError, match=r"^tensor 't' .*found holes at ") as info:
        validate(md)
    assert f"offsets={tuple(dropped.offsets)}" in str(info.value)
    validate(md, allow_partial=True)


@PROPERTY
@given(tensor_entries(valid=True), st.data())
def test_validate_reports_a_repeated_chunk_as_an_overlap(
    entry: TensorStorageMetadata, data: st.DataObject
) -> None:
    full = [i for i, c in enumerate(entry.chunks) if all(c.sizes)]
    if not full:
        return
    entry.chunks.append(entry.chunks[data.draw(st.sampled_from(full))])
    with pytest.raises(InvalidMetadataError, match="expected disjoint chunks"):
        validate(Metadata({"t": entry}), allow_partial=True)


def test_validate_accepts_0dim_and_zero_size_tensors() -> None:
    validate(tensor((), ((), ())))
    validate(tensor((0, 4)))  # nothing to cover
    validate(tensor((0, 4), ((0, 0), (0, 4))))
    validate(
        tensor((3, 4), ((0, 0), (3, 4)), ((3, 0), (0, 4)))
    )  # an empty chunk at the end is in bounds


def test_validate_out_of_bounds_names_chunk_and_box() -> None:
    md = tensor((4, 4), ((0, 0), (2, 4)), ((2, 1), (2, 4)))
    with pytest.raises(InvalidMetadataError) as info:
        validate(md)
    assert str(info.value) == (
        "tensor 'w.0' of size (4, 4): chunk 1 offsets=(2, 1) sizes=(2, 4): "
        "expected 2 dims within the tensor, found ends (4, 5)"
    )


def test_validate_wrong_rank_chunk() -> None:
    with pytest.raises(
        InvalidMetadataError, match=r"chunk 0 offsets=\(0,\) sizes=\(4,\): expected 2 dims"
    ):
        validate(tensor((4, 4), ((0,), (4,))))
    with pytest.raises(
        InvalidMetadataError, match=r"chunk 0 .*: expected 2 non-negative offsets and sizes"
    ):
        validate(tensor((4, 4), ((0,), (4, 4))))
    with pytest.raises(
        InvalidMetadataError, match=r"tensor 'w.0' of size \(4, -1\): expected sizes >= 0"
    ):
        validate(tensor((4, -1)))


def test_validate_overlap_names_both_chunks_and_the_common_box() -> None:
    md = tensor((4, 4), ((0, 0), (4, 2)), ((0, 2), (4, 2)), ((3, 1), (1, 2)))
    with pytest.raises(InvalidMetadataError) as info:
        validate(md)
    assert str(info.value) == (
        "tensor 'w.0' of size (4, 4): expected disjoint chunks, found chunk 0 offsets=(0, 0) "
        "sizes=(4, 2) and chunk 2 offsets=(3, 1) sizes=(1, 2) overlapping in offsets=(3, 1) "
        "sizes=(1, 1)"
    )


def test_validate_holes_give_coordinates_unless_partial() -> None:
    md = tensor((4, 4), ((0, 0), (2, 4)))
    with pytest.raises(InvalidMetadataError) as info:
        validate(md)
    assert str(info.value) == (
        "tensor 'w.0' of size (4, 4): expected its 1 chunks to cover it, found holes at "
        "offsets=(2, 0) sizes=(2, 4)"
    )
    validate(md, allow_partial=True)
    with pytest.raises(InvalidMetadataError, match=r"found holes at offsets=\(\) sizes=\(\)"):
        validate(tensor(()))


def test_validate_first_problem_wins() -> None:
    md = tensor((4,), ((0,), (5,)))
    md.state_dict_metadata["a"] = tensor((4,), ((0,), (2,))).state_dict_metadata["w.0"]
    with pytest.raises(InvalidMetadataError, match=r"^tensor 'w\.0'"):
        validate(md)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            MetadataIndex("nope", [0, 0]),
            "fqn='nope' offset=torch.Size([0, 0]): expected a state_dict_metadata entry",
        ),
        (
            MetadataIndex("w.0", [1, 0]),
            "fqn='w.0' offset=torch.Size([1, 0]): expected the offsets of one of the tensor's 4",
        ),
        (
            MetadataIndex("w.0"),
            "fqn='w.0' offset=None: expected the offsets of one of the tensor's 4 chunks",
        ),
        (
            MetadataIndex("step", [0]),
            "fqn='step' offset=torch.Size([0]): expected no offset for a bytes entry",
        ),
        ("w.0", "storage_data: expected MetadataIndex keys, found string 'w.0'"),
    ],
)
def test_validate_storage_keys_name_existing_items(key: object, message: str) -> None:
    md = sample()
    validate(md)
    md.storage_data[key] = ItemLocation("f", 0, 0)
    with pytest.raises(InvalidMetadataError) as info:
        validate(md)
    assert message in str(info.value)


def test_validate_checks_keys_of_foreign_storage_data_too() -> None:
    md = sample()
    md.storage_data = {MetadataIndex("w.0", [0, 0]): object(), "prefix": "__0_"}
    validate(md)  # another backend's values are not judged, and non-index keys are skipped
    md.storage_data[MetadataIndex("gone")] = object()
    with pytest.raises(InvalidMetadataError, match="fqn='gone'"):
        validate(md)


# --- docs/format.md stays true --------------------------------------------------------------------

_SPEC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "format.md"


def _metadata_section() -> str:
    """Section 1 of the spec; the later sections belong to the backends and their tests."""
    text = _SPEC.read_text(encoding="utf-8")
    return text.split("\n## 1. Metadata document", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("section", ["### 1.4", "### 1.6"])
def test_docs_example_is_the_sample(section: str) -> None:
    example = _metadata_section().split(section, 1)[1].split("```json", 1)[1]
    assert_exact(loads(example.split("```", 1)[0]), sample())


def test_docs_name_only_tests_that_exist() -> None:
    named = set(re.findall(r"`(test_\w+)`", _metadata_section()))
    assert len(named) > 20
    assert named <= set(globals()), sorted(named - set(globals()))
    rules = {name for name in globals() if name.startswith("test_rule_")}
    assert rules <= named, sorted(rules - named)
