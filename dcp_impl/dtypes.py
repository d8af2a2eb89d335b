"""THE dtype table: every torch dtype a checkpoint can hold, in one place.

Each row gives the canonical name used in dcp_impl's metadata (torch's
attribute name, e.g. ``"bfloat16"``), the safetensors dtype name where a
safetensors file written with it loads back through ``safetensors.torch``,
and the storage bits per element. Lookups of anything not in the table raise
:class:`~dcp_impl.errors.UnknownDtypeError`; there is no default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dcp_impl.errors import UnknownDtypeError

__all__ = [
    "DTYPES",
    "DtypeInfo",
    "by_name",
    "by_safetensors",
    "by_torch",
    "copy_bits",
    "dense",
    "raw_bytes",
]


@dataclass(frozen=True, slots=True)
class DtypeInfo:
    """One row of the dtype table."""

    torch_dtype: torch.dtype
    name: str
    safetensors: str | None
    bits: int

    def __post_init__(self) -> None:
        if self.bits % 8 or self.bits <= 0:
            raise ValueError(f"{self.name}: bits per element must be whole bytes, got {self.bits}")
        if getattr(torch, self.name) is not self.torch_dtype:
            raise ValueError(f"{self.name}: torch.{self.name} is not {self.torch_dtype}")

    @property
    def itemsize(self) -> int:
        """Bytes per stored element (as ``torch.Tensor.element_size``)."""
        return self.bits // 8


def _row(dtype: torch.dtype, safetensors: str | None) -> DtypeInfo:
    return DtypeInfo(dtype, str(dtype).removeprefix("torch."), safetensors, dtype.itemsize * 8)


# Bits are torch's storage bits: float4_e2m1fn_x2 packs two 4-bit values into
# one 8-bit element, and its shape counts those packed bytes. safetensors'
# "F4" counts 4-bit elements, so the two shapes differ and no mapping is given.
# safetensors defines "F8_E8M0" but safetensors.torch 0.8 cannot load it, so
# float8_e8m0fnu has none either: every file we write must load back there.
DTYPES: tuple[DtypeInfo, ...] = (
    _row(torch.bool, "BOOL"),
    _row(torch.uint8, "U8"),
    _row(torch.uint16, "U16"),
    _row(torch.uint32, "U32"),
    _row(torch.uint64, "U64"),
    _row(torch.int8, "I8"),
    _row(torch.int16, "I16"),
    _row(torch.int32, "I32"),
    _row(torch.int64, "I64"),
    _row(torch.float16, "F16"),
    _row(torch.bfloat16, "BF16"),
    _row(torch.float32, "F32"),
    _row(torch.float64, "F64"),
    _row(torch.complex32, None),
    _row(torch.complex64, "C64"),
    _row(torch.complex128, None),
    _row(torch.float8_e4m3fn, "F8_E4M3"),
    _row(torch.float8_e4m3fnuz, "F8_E4M3FNUZ"),
    _row(torch.float8_e5m2, "F8_E5M2"),
    _row(torch.float8_e5m2fnuz, "F8_E5M2FNUZ"),
    _row(torch.float8_e8m0fnu, None),
    _row(torch.float4_e2m1fn_x2, None),
    _row(torch.bits8, None),
    _row(torch.bits16, None),
    _row(torch.bits1x8, None),
    _row(torch.bits2x4, None),
    _row(torch.bits4x2, None),
)

_BY_TORCH = {row.torch_dtype: row for row in DTYPES}
_BY_NAME = {row.name: row for row in DTYPES}
_BY_SAFETENSORS = {row.safetensors: row for row in DTYPES if row.safetensors is not None}


def by_torch(dtype: torch.dtype) -> DtypeInfo:
    """Return the row for a torch dtype; raise UnknownDtypeError if it has none."""
    try:
        return _BY_TORCH[dtype]
    except (KeyError, TypeError):
        raise UnknownDtypeError(
            f"dtype {dtype!r} cannot be checkpointed: expected one of {sorted(_BY_NAME)}"
        ) from None


def by_name(name: str) -> DtypeInfo:
    """Return the row for a canonical name such as ``"bfloat16"``."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise UnknownDtypeError(
            f"dtype name {name!r} is unknown: expected one of {sorted(_BY_NAME)}"
        ) from None


def by_safetensors(name: str) -> DtypeInfo:
    """Return the row for a safetensors dtype name such as ``"BF16"``."""
    try:
        return _BY_SAFETENSORS[name]
    except (KeyError, TypeError):
        raise UnknownDtypeError(
            f"safetensors dtype {name!r} is unknown: expected one of {sorted(_BY_SAFETENSORS)}"
        ) from None


# Same-size integer dtypes that carry another dtype's bits through a copy. torch has no copy
# kernel for some dtypes (float4_e2m1fn_x2, the bits* types): copying one between different
# layouts raises NotImplementedError once it leaves torch's byte-copy fast path.
_CARRIERS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _carried(tensor: torch.Tensor) -> torch.Tensor:
    carrier = _CARRIERS.get(tensor.element_size())
    return tensor if carrier is None else tensor.view(carrier)


def dense(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself if contiguous, else a contiguous copy of its bits (any dtype).

    A conjugated or negated view (``x.conj()``, ``torch._neg_view``) is resolved first: its
    lazy bit is part of its values, which its storage alone does not hold.
    """
    tensor = tensor.resolve_conj().resolve_neg()
    if tensor.is_contiguous():
        return tensor
    return _carried(tensor).contiguous().view(tensor.dtype)


def copy_bits(dest: torch.Tensor, src: torch.Tensor, *, non_blocking: bool = False) -> None:
    """``dest.copy_(src)``, bit for bit between tensors of one dtype whatever the dtype.

    Between two dtypes it is ``copy_``'s conversion.
    """
    if dest.dtype != src.dtype:
        dest.copy_(src, non_blocking=non_blocking)
        return
    source = src.resolve_conj().resolve_neg()  # a conj/neg bit is part of the values
    _carried(dest).copy_(_carried(source), non_blocking=non_blocking)


def raw_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The row-major bytes of ``tensor``'s values as a flat uint8 tensor, any dtype and strides.

    A view of the tensor's memory when it is contiguous, else a copy.
    """
    if tensor.numel() == 0:
        return torch.empty(0, dtype=torch.uint8, device=tensor.device)
    flat = dense(tensor).reshape(-1)
    if flat.stride(0) != 1:  # a contiguous one-element tensor may keep any stride
        flat = flat.as_strided((flat.numel(),), (1,))
    return flat.view(torch.uint8)
