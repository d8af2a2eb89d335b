"""Writing a rank's data files: safetensors files of its chunks and ``.bin`` files of bytes.

:func:`group_by_file` turns a rank's write items and :class:`Assignment` into one job per
file; :class:`FileWriter` writes a job to the file's temporary name (the coordinator's
commit renames it into place) and returns one WriteResult per item, its storage_data an
:class:`ItemLocation` with the checksum computed while writing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import torch
from torch.distributed.checkpoint.planner import SavePlanner, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import WriteResult

from dcp_impl import dtypes, transfer
from dcp_impl.errors import (
    InvalidMetadataError,
    LayoutMismatchError,
    UnsupportedError,
)
from dcp_impl.huggingface._folder import temp_name
from dcp_impl.huggingface._plan import Assignment
from dcp_impl.huggingface._safetensors import (
    DCP_VERSION_KEY,
    FORMAT_KEY,
    SAVE_ID_KEY,
    SAVED_OFFSETS_KEY,
    SHARDING_INFO_KEY,
    encode_header,
)
from dcp_impl.layout import Box
from dcp_impl.metadata import ItemLocation
from dcp_impl.store import Store

__all__ = ["FileWriter", "group_by_file", "located", "widest_first"]


def widest_first(info: dtypes.DtypeInfo, name: str) -> tuple[int, str]:
    """Sort key of a file's tensors: widest dtypes first, as safetensors orders them, so
    each tensor's data starts aligned to its itemsize."""
    return (-info.itemsize, name)


def located(name: str, stored: transfer.StoredRange) -> ItemLocation:
    """The storage_data of a range just written to file ``name``."""
    return ItemLocation(name, stored.offset, stored.length, stored.checksum)


def group_by_file(
    items: Sequence[WriteItem], assignment: Assignment
) -> list[tuple[str, list[WriteItem]]]:
    """One job per file: its name and the items it holds, in plan order."""
    groups: dict[str, list[WriteItem]] = {}
    for item in items:
        if item.type == WriteItemType.BYTE_IO:
            name = assignment.bytes_file
        else:
            name = assignment.files.get(item.index, "")
            if not name:
                raise InvalidMetadataError(
                    f"write_data: tensor {item.index.fqn!r} at {tuple(item.index.offset or ())} "
                    "was not in the global plan"
                )
        groups.setdefault(name, []).append(item)
    return list(groups.items())


class FileWriter:
    """Writes one file per call (one worker per I/O thread)."""

    def __init__(self, directory: Store, save_id: str, planner: SavePlanner, sync: bool) -> None:
        self.directory = directory
        self.save_id = save_id
        self.planner = planner
        self.sync = sync

    def __call__(self, job: tuple[str, list[WriteItem]]) -> list[WriteResult]:
        name, items = job
        with self.directory.create(temp_name(name, self.save_id), sync=self.sync) as out:
            if name.endswith(".bin"):
                return [self._write_bytes(out, name, item) for item in items]
            return self._write_tensors(out, name, items)

    def _write_tensors(
        self, out: transfer.ItemWriter, name: str, items: list[WriteItem]
    ) -> list[WriteResult]:
        items = sorted(items, key=lambda it: widest_first(_info(it), it.index.fqn))
        sharding = {it.index.fqn: {SAVED_OFFSETS_KEY: list(_chunk(it).offsets)} for it in items}
        header, _ = encode_header(
            [(it.index.fqn, _info(it), _chunk(it).sizes) for it in items],
            {
                FORMAT_KEY: "pt",
                SHARDING_INFO_KEY: json.dumps(sharding, ensure_ascii=False),
                DCP_VERSION_KEY: "1.0",
                SAVE_ID_KEY: self.save_id,
            },
        )
        out.write_bytes(header)
        results = []
        for item in items:
            tensor = self.planner.resolve_data(item)
            tensor = _check_tensor(item, tensor)
            # transfer.tensor_bytes cannot view an empty tensor with odd strides; it has no bytes.
            stored = out.write_tensor(tensor) if tensor.numel() else out.write_bytes(b"")
            results.append(WriteResult(item.index, stored.length, located(name, stored)))
        return results

    def _write_bytes(self, out: transfer.ItemWriter, name: str, item: WriteItem) -> WriteResult:
        data = self.planner.resolve_data(item)
        if not isinstance(data, io.BytesIO):
            raise UnsupportedError(
                f"entry {item.index.fqn!r}: expected io.BytesIO, found {type(data).__name__}"
            )
        stored = out.write_bytes(data.getbuffer())
        return WriteResult(item.index, stored.length, located(name, stored))

    def close(self) -> None:
        pass


def _chunk(item: WriteItem) -> Box:
    assert item.tensor_data is not None  # HuggingFaceWriter.prepare_local_plan checked it
    return Box.of(item.tensor_data.chunk)


def _info(item: WriteItem) -> dtypes.DtypeInfo:
    assert item.tensor_data is not None  # HuggingFaceWriter.prepare_local_plan checked it
    return dtypes.by_torch(item.tensor_data.properties.dtype)


def _check_tensor(item: WriteItem, tensor: object) -> torch.Tensor:
    """The planner must hand over exactly the planned chunk: never write other bytes."""
    if not isinstance(tensor, torch.Tensor):
        raise UnsupportedError(
            f"tensor {item.index.fqn!r}: expected a torch.Tensor, found {type(tensor).__name__}"
        )
    expected = (_info(item).torch_dtype, _chunk(item).sizes)
    found = (tensor.dtype, tuple(tensor.shape))
    if found != expected:
        raise LayoutMismatchError(
            f"tensor {item.index.fqn!r}: expected dtype/shape {expected}, found {found}"
        )
    return tensor
