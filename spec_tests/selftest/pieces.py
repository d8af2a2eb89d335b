"""Broken backends whose bug is in checking piece checksums (docs/format.md, rule D15): the
checks pass whole reads and one-piece chunks, and miss damage in the other pieces a
sub-box read spans.

Each reads dcp_impl-fs checkpoints through a :class:`~dcp_impl.store.LocalStore` that checks
pieces itself, as a hand-written store might, then reads without verification.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch.distributed.checkpoint.storage import StorageReader

from dcp_impl.dtypes import by_torch
from dcp_impl.errors import CorruptCheckpointError
from dcp_impl.filesystem import FileSystemReader
from dcp_impl.layout import byte_span
from dcp_impl.store import LocalStore
from dcp_impl.transfer import ReadRequest
from spec_tests.selftest.wrap import Wrapped

__all__ = ["ChecksTheFirstPieceOnly"]


class _FirstPieceStore(LocalStore):
    """Checks, for each destination of a verified read, the piece its bytes start in ("a
    read is smaller than a piece"), then reads the bytes unverified."""

    def read(
        self,
        requests: Sequence[ReadRequest],
        *,
        thread_count: int | None = None,
        verify: bool,
        max_inflight_bytes: int | None = None,
    ) -> None:
        # docstring inherited
        if verify:
            for request in requests:
                self._check_first_pieces(request)
        super().read(
            requests,
            thread_count=thread_count,
            verify=False,
            max_inflight_bytes=max_inflight_bytes,
        )

    def _check_first_pieces(self, request: ReadRequest) -> None:
        pieces = request.pieces
        if pieces is None:
            return
        itemsize = by_torch(request.dtype).itemsize
        for target in request.targets:
            start, length, _ = byte_span(request.chunk_sizes, target.sub, itemsize)
            if not length:
                continue
            k = start // pieces.size
            begin, stop = pieces.span(k)
            data = bytearray(stop - begin)
            source = self.opener(request.path)
            try:
                source.preadv([memoryview(data)], request.offset + begin)
            finally:
                source.close()
            if pieces.found(bytes(data)) != pieces.digest(k):
                raise CorruptCheckpointError(f"{request.path}: piece {k} fails its checksum")


class _FirstPieceReader(FileSystemReader):
    """dcp_impl's reader on a :class:`_FirstPieceStore`, kept when ``reset`` retargets it."""

    def __init__(self, path: str) -> None:
        super().__init__(_FirstPieceStore(path))

    def reset(self, checkpoint_id: object = None, **kwargs: Any) -> None:
        # docstring inherited
        target = None if checkpoint_id is None else _FirstPieceStore(os.fspath(checkpoint_id))  # type: ignore[call-overload]
        super().reset(target, **kwargs)


class ChecksTheFirstPieceOnly(Wrapped):
    """Verifies piece checksums, but only the piece each read starts in: damage in a later
    piece that a sub-box read spans is served silently.

    Family: faults (damage inside a sub-box fails its read).
    """

    base = "dcp_impl-fs"
    family = "faults"

    def inner_reader(self, path: str) -> StorageReader:
        # docstring inherited
        return _FirstPieceReader(path)
