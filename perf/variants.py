"""Backend variants measured beside the built-ins (``--perf-backends=...,perf.variants:NAME``).

They isolate the cost of one option: the verify-on/verify-off ratio of the
filesystem reader is ``dcp_impl-fs`` against ``fs_noverify`` in the same run.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.distributed.checkpoint.storage import StorageReader, StorageWriter

__all__ = ["fs_noverify"]


@dataclass(frozen=True, slots=True)
class FsNoVerify:
    """dcp_impl's filesystem backend with checksum verification off on load."""

    name: str = "dcp_impl-fs-noverify"
    capabilities: frozenset[str] | None = None

    def make_writer(self, path: str) -> StorageWriter:
        import dcp_impl

        return dcp_impl.FileSystemWriter(path)

    def make_reader(self, path: str) -> StorageReader:
        import dcp_impl

        return dcp_impl.FileSystemReader(path, verify=False)


fs_noverify = FsNoVerify()
