"""docs/format.md rule D16: the saving tensor's strides (torch 2.15's
``TensorProperties.strides``) round-trip from format version 4 on, and a torch without the
field reads every document all the same."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from _metadata import as_version, assert_exact, edited, rejects, sample, sample_doc
from hypothesis import given
from hypothesis import strategies as st
from torch.distributed.checkpoint.metadata import TensorProperties, TensorStorageMetadata

from dcp_impl.metadata import FORMAT_VERSION, dumps, loads

#: Whether this torch has the field (2.15 on); the checks below hold either way.
HAS_STRIDES = "strides" in {f.name for f in dataclasses.fields(TensorProperties)}
_PROPS = '$.state_dict_metadata["w.0"].properties'


@dataclasses.dataclass
class _WithStrides(TensorProperties):
    """TensorProperties as torch 2.15 has them, on any torch (the encoder reads the field)."""

    strides: tuple[int, ...] | None = None


def _strides(value: object) -> dict[str, object]:
    return edited(lambda d: d["state_dict_metadata"]["w.0"]["properties"].update(strides=value))


def test_version_3_documents_still_decode() -> None:
    assert_exact(loads(json.dumps(as_version(sample_doc(), 3))), sample())
    rewritten = json.loads(dumps(loads(json.dumps(as_version(sample_doc(), 3)))))
    assert rewritten["format_version"] == FORMAT_VERSION == 4
    assert rewritten["state_dict_metadata"]["w.0"]["properties"]["strides"] is None


def test_rule_strides() -> None:
    rejects(_strides([4]), f"{_PROPS}.strides", "2 dimensions (the tensor's), found 1")
    rejects(_strides([4, -1]), f"{_PROPS}.strides[1]", "an integer in [0, 2**63-1]")
    rejects(_strides("4,1"), f"{_PROPS}.strides", "a JSON array of integers")
    rejects(_strides([4, 1.0]), f"{_PROPS}.strides[1]", "an integer")


@given(st.lists(st.integers(0, 2**63 - 1), min_size=2, max_size=2))
def test_strides_are_written_and_read_where_torch_has_them(strides: list[int]) -> None:
    md = sample()
    entry = md.state_dict_metadata["w.0"]
    assert isinstance(entry, TensorStorageMetadata)
    props = _WithStrides(torch.float32, strides=tuple(strides))
    md.state_dict_metadata["w.0"] = TensorStorageMetadata(props, entry.size, entry.chunks)
    doc = json.loads(dumps(md))
    assert doc["state_dict_metadata"]["w.0"]["properties"]["strides"] == strides
    read = loads(dumps(md)).state_dict_metadata["w.0"].properties  # type: ignore[union-attr]
    # an older torch has nowhere to put them: the bytes are stored contiguous either way
    assert getattr(read, "strides", None) == (tuple(strides) if HAS_STRIDES else None)


@pytest.mark.skipif(not HAS_STRIDES, reason="torch before 2.15 has no TensorProperties.strides")
@pytest.mark.parametrize(
    "tensor",
    [torch.zeros(()), torch.zeros(3, 4).t(), torch.zeros(4, 1).expand(4, 5), torch.zeros(0, 2)],
    ids=["0-d", "transposed", "expanded", "empty"],
)
def test_strides_of_real_tensors_round_trip(tensor: torch.Tensor) -> None:
    md = sample()
    props = TensorProperties.create_from_tensor(tensor)
    md.state_dict_metadata["w.0"] = TensorStorageMetadata(props, tensor.shape, [])
    md.storage_data = None
    assert_exact(loads(dumps(md)), md)
