"""What the dcp_impl.metadata tests share: strategies for any ``Metadata``, docs/format.md's
example (``sample()``, in both versions), and the checks of an exact round trip and a refusal."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)

from dcp_impl import dtypes
from dcp_impl.errors import InvalidMetadataError
from dcp_impl.metadata import ItemLocation, dumps, loads

__all__ = [
    "PROPERTY",
    "LAYOUTS",
    "FORMATS",
    "shapes",
    "grid_chunks",
    "tensor_entries",
    "metadatas",
    "sample",
    "sample_doc",
    "v1_document",
    "sample_doc_v1",
    "rejects",
    "edited",
    "edited_v1",
    "assert_exact",
]

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
LAYOUTS = [getattr(torch, name) for name in _LAYOUT_NAMES.split()]
FORMATS = [torch.contiguous_format, torch.channels_last, torch.channels_last_3d]
FORMATS.append(torch.preserve_format)
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
    layout=st.sampled_from(LAYOUTS),
    requires_grad=st.booleans(),
    memory_format=st.sampled_from(FORMATS),
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


# --- docs/format.md's example, and checks -------------------------------------------------------


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


def as_version(doc: dict[str, Any], version: int) -> dict[str, Any]:
    """A version-4 document as versions 2 or 3 wrote it: the same, without properties' strides.

    (Version 2 differs from 3 only in what checksums may be, so the sample fits both.)
    """
    for entry in doc["state_dict_metadata"].values():
        if entry["kind"] == "tensor":
            entry["properties"].pop("strides")
    return doc | {"format_version": version}


def v1_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A version-4 document rewritten as version 1 wrote it (one object per chunk and item)."""
    doc = as_version(doc, 1)
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
