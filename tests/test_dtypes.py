"""The dtype table: complete, consistent with torch and safetensors, strict on unknowns."""

from __future__ import annotations

import numpy as np
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


def _transposed_bytes(raw: torch.Tensor, itemsize: int) -> bytes:
    """The oracle: numpy transposes opaque ``itemsize``-byte records, knowing nothing of dtypes."""
    return np.ascontiguousarray(raw.numpy().view(f"V{itemsize}").T).tobytes()


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("dtype", [torch.float4_e2m1fn_x2, torch.bits16, torch.complex128])
def test_dense_and_copy_bits_work_for_dtypes_torch_cannot_copy(dtype: torch.dtype) -> None:
    # 512 KiB: past torch's byte-copy fast path, float4 and bits* have no copy kernel at all.
    raw = (torch.arange(512 * 1024) * 37 % 256).to(torch.uint8).reshape(512, 1024)
    transposed = raw.view(dtype).t()
    expected = _transposed_bytes(raw, dtype.itemsize)
    dense = dtypes.dense(transposed)
    assert dense.is_contiguous()
    assert _bytes(dense) == expected
    strided = torch.empty(tuple(transposed.shape)[::-1], dtype=dtype).t()  # a non-contiguous dest
    dtypes.copy_bits(strided, transposed)
    assert _bytes(dtypes.dense(strided)) == expected


def test_copy_bits_between_two_dtypes_converts() -> None:
    dest = torch.zeros(3, dtype=torch.float64)
    dtypes.copy_bits(dest, torch.tensor([1.5, -2.0, 3.25], dtype=torch.float32))
    assert dest.tolist() == [1.5, -2.0, 3.25]
