"""The built-in backends: torch's storage classes and dcp_impl's, in the configurations users run.

Each imports its storage classes only inside ``make_writer`` / ``make_reader``, so the
registry works before (or without) those classes. :data:`BUILTINS` maps each built-in name
(a ``--dcp-backend`` SPEC) to a factory; :func:`spec_tests.backends.builtin` looks one up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dcp_impl.dtypes import DTYPES
from spec_tests.contract.capabilities import DTYPE_CAPS, GENERAL_CAPS

if TYPE_CHECKING:
    from torch.distributed.checkpoint.storage import StorageReader, StorageWriter

    from spec_tests.contract.protocol import Backend

__all__ = [
    "BUILTINS",
    "OPT_IN",
    "DcpImplFS",
    "DcpImplHF",
    "DcpImplHFConsolidated",
    "TorchFS",
    "TorchFsspec",
    "TorchHF",
    "TorchHFConsolidated",
]


def _safetensors_dtype_caps() -> frozenset[str]:
    return frozenset(f"dtype:{row.name}" for row in DTYPES if row.safetensors is not None)


def _torch_hf_caps() -> frozenset[str]:
    # torch's HF reader names dtypes through safetensors' own table, so by design it stores
    # every dtype safetensors can name. Keys are tensor names, so one file cannot hold two
    # chunks of a tensor (no multi-chunk); metadata is rebuilt from safetensors headers (no
    # metadata-exact); non-tensor entries are not supported (no bytes); no checksums and
    # files are rewritten in place (no integrity, no atomic-commit).
    return _safetensors_dtype_caps() | {"multi-rank", "reshard", "overwrite", "multiprocess"}


@dataclass(frozen=True, slots=True)
class TorchFS:
    """torch's own FileSystemWriter / FileSystemReader."""

    name: str = "torch-fs"
    # No checksums (integrity), and an overwrite rewrites the data files in place before the
    # new .metadata is renamed over the old one (atomic-commit). No bits* dtypes: the writer
    # sizes every item with torch._utils._element_size, which has no size for them, so no
    # save of one can succeed by construction. No safe-load: the reader hands bytes entries to
    # the planner unchecked (and unpickles .metadata itself, pytorch#189308).
    capabilities: frozenset[str] | None = field(
        default=frozenset(c for c in DTYPE_CAPS if not c.startswith("dtype:bits"))
        | (GENERAL_CAPS - {"integrity", "integrity-pieces", "atomic-commit", "safe-load"}),
        repr=False,
    )
    thread_count: int = 1  # torch-fs-threads: 4 writer threads per rank
    async_save: str | None = None  # torch-fs-async: saves as dcp.async_save's PROCESS mode

    def configurations(self) -> dict[str, Backend]:
        """torch-fs, torch-fs-threads and torch-fs-async."""
        return _family("torch-fs")

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        from torch.distributed.checkpoint.filesystem import FileSystemWriter

        return FileSystemWriter(path, thread_count=self.thread_count)

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        from torch.distributed.checkpoint.filesystem import FileSystemReader

        return FileSystemReader(path)


def _torch_fsspec() -> Any:
    # torch 2.15 made the module public and deprecated the private name (importing it warns,
    # an error under the suite's filterwarnings); torch 2.11 to 2.14 have only the private one.
    try:
        return importlib.import_module("torch.distributed.checkpoint.fsspec_filesystem")
    except ModuleNotFoundError:
        return importlib.import_module("torch.distributed.checkpoint._fsspec_filesystem")


@dataclass(frozen=True, slots=True)
class TorchFsspec:
    """torch's FsspecWriter / FsspecReader: its filesystem backend over any fsspec URL.

    Locations may be local paths or URLs (``s3://bucket/prefix`` with s3fs installed); the
    suite reaches an object store with ``--dcp-root URL``.
    """

    name: str = "torch-fsspec"
    # torch-fs's claims, for the same reasons: it is torch's FileSystemWriter/Reader with the
    # file operations done through fsspec. On an object store "rename" is copy-then-delete,
    # which does not make atomic-commit any more attainable.
    capabilities: frozenset[str] | None = field(
        default=frozenset(c for c in DTYPE_CAPS if not c.startswith("dtype:bits"))
        | (GENERAL_CAPS - {"integrity", "integrity-pieces", "atomic-commit", "safe-load"}),
        repr=False,
    )

    def configurations(self) -> dict[str, Backend]:
        """torch-fsspec only: it is constructed with no options."""
        return _family("torch-fsspec")

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        return _torch_fsspec().FsspecWriter(path)

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        return _torch_fsspec().FsspecReader(path)


@dataclass(frozen=True, slots=True)
class TorchHF:
    """torch's HuggingFaceStorageWriter / HuggingFaceStorageReader, one shard file per rank."""

    name: str = "torch-hf"
    capabilities: frozenset[str] | None = field(default_factory=_torch_hf_caps, repr=False)
    # save_distributed=True gives each rank its own shard file (with its chunk offsets). False
    # is the constructor's default (torch-hf-defaults): whole tensors, as one rank saves them.
    distributed: bool = True

    def configurations(self) -> dict[str, Backend]:
        """torch-hf-defaults, torch-hf and torch-hf-consolidated."""
        return _family("torch-hf")

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter

        return HuggingFaceStorageWriter(path, save_distributed=self.distributed)

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader

        return HuggingFaceStorageReader(path)


@dataclass(frozen=True, slots=True)
class DcpImplFS:
    """dcp_impl's FileSystemWriter / FileSystemReader."""

    name: str = "dcp_impl-fs"
    capabilities: frozenset[str] | None = None
    thread_count: int = 1  # dcp_impl-fs-threads: 4 writer threads per rank
    async_save: str | None = None  # dcp_impl-fs-async: saves as dcp.async_save's PROCESS mode
    share_reads: str | None = None  # dcp_impl-fs-shared-reads: ranks share reads through /dev/shm

    def configurations(self) -> dict[str, Backend]:
        """dcp_impl-fs, dcp_impl-fs-threads, dcp_impl-fs-async and (opt-in, see
        :data:`OPT_IN`) dcp_impl-fs-shared-reads."""
        return _family("dcp_impl-fs")

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        import dcp_impl

        return dcp_impl.FileSystemWriter(path, thread_count=self.thread_count)

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        import dcp_impl

        return dcp_impl.FileSystemReader(path, share_reads=self.share_reads)  # type: ignore[arg-type]

    def trusting_reader(self, path: str) -> StorageReader:
        """The reader with ``trust_pickle=True``: non-tensor entries reach the planner unchecked."""
        import dcp_impl

        return dcp_impl.FileSystemReader(path, trust_pickle=True, share_reads=self.share_reads)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class DcpImplHF:
    """dcp_impl's HuggingFaceWriter / HuggingFaceReader, one shard file per rank."""

    name: str = "dcp_impl-hf"
    # Every dtype with a safetensors name in the dtype table, and everything else.
    capabilities: frozenset[str] | None = field(
        default_factory=lambda: _safetensors_dtype_caps() | GENERAL_CAPS, repr=False
    )
    # As for torch-hf: each rank writes its own shard file with its chunks' offsets. The
    # default (dcp_impl-hf-defaults) holds whole tensors only, and refuses anything else.
    distributed: bool = True

    def configurations(self) -> dict[str, Backend]:
        """dcp_impl-hf-defaults, dcp_impl-hf and dcp_impl-hf-consolidated."""
        return _family("dcp_impl-hf")

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        import dcp_impl

        return dcp_impl.HuggingFaceWriter(path, save_distributed=self.distributed)

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        import dcp_impl

        return dcp_impl.HuggingFaceReader(path)

    def trusting_reader(self, path: str) -> StorageReader:
        """The reader with ``trust_pickle=True``: non-tensor entries reach the planner unchecked."""
        import dcp_impl

        return dcp_impl.HuggingFaceReader(path, trust_pickle=True)


def _consolidating(threads: int) -> dict[str, Any]:
    """The HF writer options of the consolidated built-ins (torch's and dcp_impl's take them)."""
    return {
        "save_distributed": True,
        "enable_consolidation": True,
        "thread_count": threads,
        "thread_count_consolidation": threads,
    }


@dataclass(frozen=True, slots=True)
class TorchHFConsolidated:
    """torch's HF writer as torchtitan runs it: consolidation on, writer threads.

    ``enable_consolidation=True`` writes each rank's shard file into ``path/sharded`` and,
    in ``finish``, full tensors into ``path`` (``thread_count_consolidation`` threads),
    where the reader finds them; writes use ``thread_count`` threads per rank.
    """

    name: str = "torch-hf-consolidated"
    capabilities: frozenset[str] | None = field(default_factory=_torch_hf_caps, repr=False)
    threads: int = 4

    def configurations(self) -> dict[str, Backend]:
        """The torch-hf family's: this is its consolidated configuration."""
        return _family("torch-hf")

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter

        return HuggingFaceStorageWriter(path, **_consolidating(self.threads))

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader

        return HuggingFaceStorageReader(path)

    def consolidated(self, path: str) -> str:
        """The consolidated files are ``path``'s own safetensors files (shards are below)."""
        return path


@dataclass(frozen=True, slots=True)
class DcpImplHFConsolidated:
    """dcp_impl's HuggingFaceWriter configured as torch-hf-consolidated: consolidation, threads.

    Shards go to ``path/sharded``; ``finish`` commits them, then writes full tensors (and
    their own sidecar) into ``path``, where the reader finds them.
    """

    name: str = "dcp_impl-hf-consolidated"
    # dcp_impl-hf's claims but metadata-exact: the reader reads the consolidated folder, whose
    # own sidecar holds one whole chunk per tensor, not the chunks finish was given.
    capabilities: frozenset[str] | None = field(
        default_factory=lambda: _safetensors_dtype_caps() | (GENERAL_CAPS - {"metadata-exact"}),
        repr=False,
    )
    threads: int = 4

    def configurations(self) -> dict[str, Backend]:
        """The dcp_impl-hf family's: this is its consolidated configuration."""
        return _family("dcp_impl-hf")

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        import dcp_impl

        return dcp_impl.HuggingFaceWriter(path, **_consolidating(self.threads))

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        import dcp_impl

        return dcp_impl.HuggingFaceReader(path)

    def trusting_reader(self, path: str) -> StorageReader:
        """The reader with ``trust_pickle=True``: non-tensor entries reach the planner unchecked."""
        import dcp_impl

        return dcp_impl.HuggingFaceReader(path, trust_pickle=True)

    def consolidated(self, path: str) -> str:
        """The consolidated files are ``path``'s own safetensors files (shards are below)."""
        return path


def _reference() -> Backend:
    from spec_tests.contract.reference import ReferenceBackend

    return ReferenceBackend()


# The constructor defaults of the HF writers: whole tensors only, so one rank, one chunk each.
_HF_DEFAULTS_CAPS = frozenset({"multi-rank", "multi-chunk", "multiprocess"})

BUILTINS: dict[str, Callable[[], Backend]] = {
    "dcp_impl-fs": DcpImplFS,
    "dcp_impl-fs-threads": lambda: DcpImplFS("dcp_impl-fs-threads", thread_count=4),
    "dcp_impl-fs-async": lambda: DcpImplFS("dcp_impl-fs-async", async_save="process"),
    "dcp_impl-fs-shared-reads": lambda: DcpImplFS("dcp_impl-fs-shared-reads", share_reads="shm"),
    "dcp_impl-hf": DcpImplHF,
    "dcp_impl-hf-defaults": lambda: DcpImplHF(
        "dcp_impl-hf-defaults",
        _safetensors_dtype_caps() | (GENERAL_CAPS - _HF_DEFAULTS_CAPS),
        distributed=False,
    ),
    "dcp_impl-hf-consolidated": DcpImplHFConsolidated,
    "torch-fs": TorchFS,
    "torch-fs-threads": lambda: TorchFS("torch-fs-threads", thread_count=4),
    "torch-fs-async": lambda: TorchFS("torch-fs-async", async_save="process"),
    "torch-hf": TorchHF,
    "torch-hf-defaults": lambda: TorchHF(
        "torch-hf-defaults", _torch_hf_caps() - _HF_DEFAULTS_CAPS, distributed=False
    ),
    "torch-hf-consolidated": TorchHFConsolidated,
    "torch-fsspec": TorchFsspec,
    "reference": _reference,
}

OPT_IN: frozenset[str] = frozenset({"dcp_impl-fs-shared-reads"})
"""Built-ins the matrix runs only where they are named (``--backend``), never by default:
each is one option of a family the default matrix runs already, and CI's time is spent.
``--dcp-backend=dcp_impl-fs[shared-reads]`` selects the one there is."""

# Each family's named configurations (the optional Backend member), as built-in names.
_FAMILIES: dict[str, dict[str, str]] = {
    "dcp_impl-fs": {
        "defaults": "dcp_impl-fs",
        "threads": "dcp_impl-fs-threads",
        "async": "dcp_impl-fs-async",
        "shared-reads": "dcp_impl-fs-shared-reads",
    },
    "dcp_impl-hf": {
        "defaults": "dcp_impl-hf-defaults",
        "distributed": "dcp_impl-hf",
        "consolidated": "dcp_impl-hf-consolidated",
    },
    "torch-fs": {"defaults": "torch-fs", "threads": "torch-fs-threads", "async": "torch-fs-async"},
    "torch-hf": {
        "defaults": "torch-hf-defaults",
        "distributed": "torch-hf",
        "consolidated": "torch-hf-consolidated",
    },
    "torch-fsspec": {"defaults": "torch-fsspec"},
}


def _family(name: str) -> dict[str, Backend]:
    return {config: BUILTINS[builtin]() for config, builtin in _FAMILIES[name].items()}
