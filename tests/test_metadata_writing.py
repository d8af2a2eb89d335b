"""dcp_impl.metadata.dumps: the writing rules of docs/format.md §1.3 (W1-W3): exact round trips,
the compact chunk table, what dumps refuses; and §1.7's size per chunk."""

from __future__ import annotations

import itertools
import json
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _metadata import FORMATS, LAYOUTS, PROPERTY, assert_exact, metadatas, sample, shapes
from hypothesis import event, given
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
from dcp_impl.errors import InvalidMetadataError
from dcp_impl.metadata import ItemLocation, dumps, loads, validate

# --- exact round trips (W1, W2) -----------------------------------------------------------------


@PROPERTY
@given(metadatas())
def test_roundtrip_is_exact(md: Metadata) -> None:
    text = dumps(md)
    assert_exact(loads(text), md)
    assert loads(text.encode("utf-8")) == md


@PROPERTY
@given(metadatas())
def test_encoding_is_deterministic(md: Metadata) -> None:
    text = dumps(md)
    # (no deepcopy here: torch's TensorProperties cannot pickle channels_last_3d; we can)
    assert dumps(md) == text
    assert dumps(loads(text)) == text


def test_roundtrip_every_dtype_layout_and_memory_format() -> None:
    entries: dict[str, TensorStorageMetadata | BytesStorageMetadata] = {}
    for i, (row, lay, mf) in enumerate(itertools.zip_longest(dtypes.DTYPES, LAYOUTS, FORMATS)):
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


# --- the compact chunk table (§1.2) and its size (§1.7) -----------------------------------------


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


# --- what dumps refuses, and what it accepts from torch (W3) ------------------------------------


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
