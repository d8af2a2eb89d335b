"""docs/format.md §1 stays true: its worked example (§1.4) and the same in version 1 (§1.6) are
the tests' sample, version-1 documents still decode, and every test it names exists."""

from __future__ import annotations

import ast
import json
import pathlib
import re

import pytest
from _metadata import PROPERTY, assert_exact, metadatas, sample, v1_document
from hypothesis import given
from torch.distributed.checkpoint.metadata import Metadata

from dcp_impl.metadata import dumps, loads


@PROPERTY
@given(metadatas())
def test_version_1_documents_still_decode(md: Metadata) -> None:
    """What version 1 wrote for any Metadata decodes to that Metadata, as it always did."""
    text = json.dumps(v1_document(json.loads(dumps(md))), ensure_ascii=False)
    assert_exact(loads(text), md)
    assert dumps(loads(text)) == dumps(md)


_TESTS = pathlib.Path(__file__).resolve().parent
_SPEC = _TESTS.parent / "docs" / "format.md"


def _metadata_section() -> str:
    """Section 1 of the spec; the later sections belong to the backends and their tests."""
    text = _SPEC.read_text(encoding="utf-8")
    return text.split("\n## 1. Metadata document", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("section", ["### 1.4", "### 1.6"])
def test_docs_example_is_the_sample(section: str) -> None:
    example = _metadata_section().split(section, 1)[1].split("```json", 1)[1]
    assert_exact(loads(example.split("```", 1)[0]), sample())


def _metadata_tests() -> set[str]:
    """The test functions of every tests/test_metadata_*.py module, read from their source:
    a test module imports no other."""
    return {
        node.name
        for module in _TESTS.glob("test_metadata_*.py")
        for node in ast.parse(module.read_text(encoding="utf-8")).body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def test_docs_name_only_tests_that_exist() -> None:
    named = set(re.findall(r"`(test_\w+)`", _metadata_section()))
    tests = _metadata_tests()
    assert len(named) > 20
    assert named <= tests, sorted(named - tests)
    rules = {name for name in tests if name.startswith("test_rule_")}
    assert rules <= named, sorted(rules - named)
