"""dcp_impl.metadata.loads on hostile input (docs/format.md §1.3, after the document rules): any
document either decodes to a Metadata dumps can write back, or raises InvalidMetadataError."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from _metadata import PROPERTY, metadatas, sample, sample_doc, sample_doc_v1, v1_document
from hypothesis import event, given, settings
from hypothesis import strategies as st
from torch.distributed.checkpoint.metadata import Metadata

from dcp_impl.errors import CheckpointError, InvalidMetadataError
from dcp_impl.metadata import dumps, loads, validate, validate_storage_keys

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
        validate_storage_keys(md)  # validate()'s last check


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
