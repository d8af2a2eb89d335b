"""Backend variants measured beside the built-ins (``--perf-backends=...,perf.variants:NAME``).

They isolate the cost of one option: the verify-on/verify-off ratio of a dcp_impl reader
is ``dcp_impl-fs`` against ``fs_noverify`` (``dcp_impl-hf`` against ``hf_noverify``) in the
same run.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.distributed.checkpoint.storage import StorageReader, StorageWriter

from spec_tests.api import Backend, builtin

__all__ = ["fs_noverify", "hf_noverify"]


@dataclass(frozen=True, slots=True)
class NoVerify:
    """A built-in dcp_impl backend whose readers check no checksums (``verify=False``)."""

    name: str
    base: Backend

    @property
    def capabilities(self) -> frozenset[str] | None:
        return self.base.capabilities

    def make_writer(self, path: str) -> StorageWriter:
        return self.base.make_writer(path)

    def make_reader(self, path: str) -> StorageReader:
        reader = self.base.make_reader(path)
        reader.verify = False  # type: ignore[attr-defined]  # dcp_impl readers read it per load
        return reader


fs_noverify = NoVerify("dcp_impl-fs-noverify", builtin("dcp_impl-fs"))
hf_noverify = NoVerify("dcp_impl-hf-noverify", builtin("dcp_impl-hf"))
