"""s3torchconnector's ``S3StorageWriter`` / ``S3StorageReader`` (AWS's DCP backend for S3).

Select it with ``--dcp-backend=spec_tests.thirdparty.s3torchconnector:backend`` and a URL
root, ``--dcp-root=s3://BUCKET/PREFIX``: its locations are S3 URIs only. The endpoint is the
standard ``AWS_ENDPOINT_URL`` (what :func:`spec_tests.sim.s3server.local_s3` exports), the region
``AWS_DEFAULT_REGION``. s3torchconnector's DCP classes take neither an endpoint nor that
variable (its ``S3Client`` takes an endpoint, its ``S3FileSystem`` takes a client), so the
writer's and reader's file system is rebuilt on a client pointed at the endpoint: the
classes' own ``fs`` attribute, which their constructors set the same way.

Its claims: S3StorageWriter/Reader *are* torch's FileSystemWriter/Reader over an S3 file
system, so torch-fsspec's claims (every dtype but the bits* ones, which torch's writer cannot
size; no integrity checks, no atomic commit, an unpickled ``.metadata``), less ``async`` and
``multiprocess``: both would run the classes in other processes that must find the local
endpoint too, which nobody has tried yet, so they are not claimed (their properties skip).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spec_tests.contract.capabilities import DTYPE_CAPS, GENERAL_CAPS

if TYPE_CHECKING:
    from torch.distributed.checkpoint.storage import StorageReader, StorageWriter

__all__ = ["S3TorchConnector", "backend"]

_DEFAULT_REGION = "us-east-1"
_UNCLAIMED = frozenset(
    {"integrity", "integrity-pieces", "atomic-commit", "safe-load", "async", "multiprocess"}
)


@dataclass(frozen=True, slots=True)
class S3TorchConnector:
    """The backend spec: s3torchconnector's DCP classes on ``AWS_ENDPOINT_URL``."""

    name: str = "s3torchconnector"
    capabilities: frozenset[str] | None = field(
        default=frozenset(c for c in DTYPE_CAPS if not c.startswith("dtype:bits"))
        | (GENERAL_CAPS - _UNCLAIMED),
        repr=False,
    )

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        from s3torchconnector.dcp import S3StorageWriter

        writer = S3StorageWriter(_region(), path, s3client_config=_config())
        writer.fs = _file_system()
        return writer

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        from s3torchconnector.dcp import S3StorageReader

        reader = S3StorageReader(_region(), path, s3client_config=_config())
        reader.fs = _file_system(reader_constructor=reader._reader_constructor)
        return reader


def _region() -> str:
    return os.environ.get("AWS_DEFAULT_REGION", _DEFAULT_REGION)


def _config() -> Any:
    from s3torchconnector import S3ClientConfig

    # A local server (moto) serves buckets by path, not by virtual host.
    return S3ClientConfig(force_path_style="AWS_ENDPOINT_URL" in os.environ)


def _file_system(**kwargs: Any) -> Any:
    from s3torchconnector._s3client import S3Client
    from s3torchconnector.dcp import S3FileSystem

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    client = S3Client(_region(), endpoint=endpoint, s3client_config=_config())
    return S3FileSystem(_region(), s3_client=client, **kwargs)


def backend() -> S3TorchConnector:
    """The backend under test (``--dcp-backend=spec_tests.thirdparty.s3torchconnector:backend``)."""
    return S3TorchConnector()
