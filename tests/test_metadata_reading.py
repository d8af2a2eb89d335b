"""dcp_impl.metadata.loads: one test per parsing and document rule of docs/format.md §1.3
(P1-P5, D1-D14), each on version-2 documents and, where the shapes differ, version-1 ones."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _metadata import (
    as_version,
    edited,
    edited_v1,
    rejects,
    sample,
    sample_doc,
    sample_doc_v1,
)
from torch.distributed.checkpoint.metadata import Metadata, TensorProperties, TensorStorageMetadata

from dcp_impl import metadata as fmt
from dcp_impl.errors import InvalidMetadataError, UnknownDtypeError
from dcp_impl.metadata import ItemLocation, dumps, loads

# --- parsing (P1-P5) ----------------------------------------------------------------------------


def test_loads_accepts_str_bytes_and_bytearray() -> None:
    text = dumps(sample())
    assert loads(text) == loads(text.encode()) == loads(bytearray(text.encode())) == sample()


def test_rule_loads_rejects_non_text() -> None:
    with pytest.raises(InvalidMetadataError, match="expected str or bytes, found int"):
        loads(12)  # type: ignore[arg-type]


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


# --- the document (D1-D14) ----------------------------------------------------------------------


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
        edited(lambda d: d.update(format_version=5)),
        "$.format_version",
        "expected one of [1, 2, 3, 4]",
        "found 5",
        "newer dcp_impl",
    )
    rejects(
        edited(lambda d: d.update(format_version=0)), "$.format_version", "found 0: no dcp_impl"
    )
    rejects(edited(lambda d: d.update(format_version=True)), "$.format_version", "found true")
    rejects(edited(lambda d: d.update(format_version="1")), "$.format_version", "found string '1'")
    # a newer version is reported as such even when it adds keys this reader does not know
    rejects(edited(lambda d: d.update(format_version=5, extra=1)), "$.format_version", "newer")
    # each version's own shape: a version-1 body under version 2 is refused, and the reverse
    rejects(sample_doc_v1() | {"format_version": 2}, '$.state_dict_metadata["w.0"].chunks')
    rejects(as_version(sample_doc(), 1), '$.state_dict_metadata["w.0"].chunks')
    # strides came with version 4: before it they are an unknown key, from it a required one
    props = '$.state_dict_metadata["w.0"].properties'
    rejects(sample_doc() | {"format_version": 3}, props, 'unknown key "strides"')
    rejects(
        as_version(sample_doc(), 3) | {"format_version": 4}, props, '"strides", found it missing'
    )


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
