"""The dtype table: complete, consistent with torch and safetensors, strict on unknowns."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

from dcp_impl import dtypes
from dcp_impl.errors import CheckpointError, UnknownDtypeError

# Dtypes torch 2.13 has but a checkpoint cannot hold: quantized dtypes need a
# quantizer, and the sub-byte shells (int1..int7, uint1..uint7) have no copy.
NOT_CHECKPOINTABLE = {
    torch.qint8, torch.quint8, torch.qint32, torch.quint4x2, torch.quint2x4,
    *(getattr(torch, f"int{n}") for n in range(1, 8)),
    *(getattr(torch, f"uint{n}") for n in range(1, 8)),
}  # fmt: skip


def all_torch_dtypes() -> set[torch.dtype]:
    return {v for v in vars(torch).values() if isinstance(v, torch.dtype)}


def test_table_covers_every_checkpointable_torch_dtype() -> None:
    in_table = {row.torch_dtype for row in dtypes.DTYPES}
    assert in_table == all_torch_dtypes() - NOT_CHECKPOINTABLE
    assert len(in_table) == len(dtypes.DTYPES), "a dtype is listed twice"


@pytest.mark.parametrize("row", dtypes.DTYPES, ids=lambda r: r.name)
def test_row_matches_torch(row: dtypes.DtypeInfo) -> None:
    tensor = torch.zeros(3, dtype=row.torch_dtype)
    assert tensor.element_size() == row.itemsize
    assert tensor.view(torch.uint8).numel() == 3 * row.itemsize
    assert dtypes.by_name(row.name) is row
    assert dtypes.by_torch(row.torch_dtype) is row


@pytest.mark.parametrize("row", [r for r in dtypes.DTYPES if r.safetensors], ids=lambda r: r.name)
def test_safetensors_names_round_trip_through_safetensors(row: dtypes.DtypeInfo, tmp_path) -> None:
    assert row.safetensors is not None
    assert dtypes.by_safetensors(row.safetensors) is row
    raw = torch.arange(6, dtype=torch.uint8).view(row.torch_dtype) if row.itemsize == 1 else None
    tensor = raw if raw is not None else torch.zeros(6 // row.itemsize or 1, dtype=row.torch_dtype)
    path = tmp_path / "t.safetensors"
    safetensors.torch.save_file({"t": tensor}, path)
    loaded = safetensors.torch.load_file(path)["t"]
    assert loaded.dtype == row.torch_dtype
    assert torch.equal(loaded.view(torch.uint8), tensor.view(torch.uint8))


@pytest.mark.parametrize(
    ("lookup", "key"),
    [
        (dtypes.by_name, "float33"),
        (dtypes.by_name, "torch.float32"),
        (dtypes.by_name, None),
        (dtypes.by_safetensors, "F8_E8M0"),
        (dtypes.by_safetensors, "f32"),
        (dtypes.by_torch, torch.qint8),
        (dtypes.by_torch, "float32"),
    ],
)
def test_unknown_dtypes_raise_never_default(lookup, key) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownDtypeError, match="expected one of") as info:
        lookup(key)
    assert isinstance(info.value, CheckpointError)
    assert isinstance(info.value, ValueError)
