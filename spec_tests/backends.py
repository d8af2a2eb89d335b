"""The backend contract the conformance suite accepts, its capability vocabulary and the built-ins.

A backend is any object with ``name``, ``capabilities`` (a frozenset of names
from :data:`CAPABILITIES`, or None for "claims every capability"),
``make_writer(path)`` and ``make_reader(path)``; optional members are listed in
:data:`OPTIONAL_MEMBERS`. The suite selects one with
``--dcp-backend=SPEC`` where SPEC is a built-in name or ``module:attr``;
:func:`load_backend` resolves a SPEC, :func:`builtin` returns a built-in.

Built-in backends import their storage classes only inside ``make_writer`` /
``make_reader``, so the registry works before (or without) those classes.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dcp_impl.dtypes import DTYPES

if TYPE_CHECKING:
    import torch
    from torch.distributed.checkpoint.storage import StorageReader, StorageWriter

__all__ = [
    "Backend",
    "BackendSpecError",
    "CAPABILITIES",
    "BUILTIN_NAMES",
    "OPTIONAL_MEMBERS",
    "builtin",
    "load_backend",
    "probe",
    "claims",
    "claimed_dtypes",
    "DcpImplFS",
    "DcpImplHF",
    "DcpImplHFConsolidated",
    "TorchFS",
    "TorchHF",
    "TorchHFConsolidated",
    "TorchFsspec",
]


@runtime_checkable
class Backend(Protocol):
    """A storage backend under test (the fixed contract; outside tools depend on it)."""

    @property
    def name(self) -> str:
        """Name shown in headers, skip reasons and the matrix."""
        ...

    @property
    def capabilities(self) -> frozenset[str] | None:
        """Claimed capability names from CAPABILITIES; None claims every capability."""
        ...

    def make_writer(self, path: str) -> StorageWriter:
        """A fresh StorageWriter for the checkpoint location ``path``."""
        ...

    def make_reader(self, path: str) -> StorageReader:
        """A fresh StorageReader for the checkpoint location ``path``."""
        ...


#: Members a backend may have (never required) -> what the suite does with them.
OPTIONAL_MEMBERS: dict[str, str] = {
    "corrupt": "corrupt(path, rng): damage stored data (the integrity properties)",
    "truncate": "truncate(path, rng): cut stored data short (the integrity properties)",
    "consolidated": (
        "consolidated(path) -> location: where a save to path puts its consolidated output, "
        "full tensors in safetensors files of their own (the consolidation properties)"
    ),
}


class BackendSpecError(ValueError):
    """A ``--dcp-backend`` SPEC names no usable backend."""


_GENERAL_CAPABILITIES: dict[str, str] = {
    "bytes": "non-tensor entries (ints, strings, dicts: DCP's BYTE_IO items) round-trip",
    "multi-rank": "several ranks save one checkpoint together",
    "multi-chunk": "one rank saves several chunks of one tensor",
    "reshard": "a checkpoint loads into a layout other than the one it was saved with",
    "metadata-exact": (
        "read_metadata() equals the Metadata finish() was given, apart from storage_meta.load_id"
    ),
    "overwrite": "a save over a committed checkpoint replaces it",
    "integrity": "corrupted or truncated stored data is detected and raises instead of loading",
    "atomic-commit": (
        "a save killed at any point leaves the previous checkpoint loadable "
        "and never exposes a mixed one"
    ),
    "multiprocess": "works from real processes (gloo process group)",
    "safe-load": (
        "a non-tensor entry whose unpickling would run code is refused on load (raises) before "
        "it reaches the load planner, whose torch.load(weights_only=False) would run it"
    ),
}

#: The one capability vocabulary: name -> meaning. ``dtype:<name>`` rows follow dcp_impl.dtypes.
CAPABILITIES: dict[str, str] = {
    **{f"dtype:{row.name}": f"stores torch.{row.name} tensors bit-exactly" for row in DTYPES},
    **_GENERAL_CAPABILITIES,
}

_DTYPE_CAPS = frozenset(f"dtype:{row.name}" for row in DTYPES)
_GENERAL_CAPS = frozenset(_GENERAL_CAPABILITIES)


def claims(backend: Backend, capability: str) -> bool:
    """Whether ``backend`` claims ``capability``; an unknown capability name is an error."""
    if capability not in CAPABILITIES:
        raise ValueError(
            f"capability {capability!r} is unknown: expected one of {sorted(CAPABILITIES)}"
        )
    return backend.capabilities is None or capability in backend.capabilities


def claimed_dtypes(backend: Backend) -> list[torch.dtype]:
    """The torch dtypes ``backend`` claims to store bit-exactly, in dtype-table order."""
    return [row.torch_dtype for row in DTYPES if claims(backend, f"dtype:{row.name}")]


# --- built-ins ---------------------------------------------------------------------------------


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
        default=frozenset(c for c in _DTYPE_CAPS if not c.startswith("dtype:bits"))
        | (_GENERAL_CAPS - {"integrity", "atomic-commit", "safe-load"}),
        repr=False,
    )
    thread_count: int = 1  # torch-fs-threads: 4 writer threads per rank

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        from torch.distributed.checkpoint.filesystem import FileSystemWriter

        return FileSystemWriter(path, thread_count=self.thread_count)

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        from torch.distributed.checkpoint.filesystem import FileSystemReader

        return FileSystemReader(path)


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
        default=frozenset(c for c in _DTYPE_CAPS if not c.startswith("dtype:bits"))
        | (_GENERAL_CAPS - {"integrity", "atomic-commit", "safe-load"}),
        repr=False,
    )

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter

        return FsspecWriter(path)

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

        return FsspecReader(path)


@dataclass(frozen=True, slots=True)
class TorchHF:
    """torch's HuggingFaceStorageWriter / HuggingFaceStorageReader, one shard file per rank."""

    name: str = "torch-hf"
    capabilities: frozenset[str] | None = field(default_factory=_torch_hf_caps, repr=False)

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter

        # save_distributed=True gives each rank its own shard file (with its chunk offsets);
        # without it every rank would write the same file name.
        return HuggingFaceStorageWriter(path, save_distributed=True)

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

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        import dcp_impl

        return dcp_impl.FileSystemWriter(path, thread_count=self.thread_count)

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        import dcp_impl

        return dcp_impl.FileSystemReader(path)


@dataclass(frozen=True, slots=True)
class DcpImplHF:
    """dcp_impl's HuggingFaceWriter / HuggingFaceReader, one shard file per rank."""

    name: str = "dcp_impl-hf"
    # Every dtype with a safetensors name in the dtype table, and everything else.
    capabilities: frozenset[str] | None = field(
        default_factory=lambda: _safetensors_dtype_caps() | _GENERAL_CAPS, repr=False
    )

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        import dcp_impl

        # As for torch-hf: each rank writes its own shard file with its chunks' offsets; the
        # default (whole tensors, rank-0 style) cannot hold multi-rank or multi-chunk saves.
        return dcp_impl.HuggingFaceWriter(path, save_distributed=True)

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        import dcp_impl

        return dcp_impl.HuggingFaceReader(path)


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
        default_factory=lambda: _safetensors_dtype_caps() | (_GENERAL_CAPS - {"metadata-exact"}),
        repr=False,
    )
    threads: int = 4

    def make_writer(self, path: str) -> StorageWriter:
        # docstring inherited
        import dcp_impl

        return dcp_impl.HuggingFaceWriter(path, **_consolidating(self.threads))

    def make_reader(self, path: str) -> StorageReader:
        # docstring inherited
        import dcp_impl

        return dcp_impl.HuggingFaceReader(path)

    def consolidated(self, path: str) -> str:
        """The consolidated files are ``path``'s own safetensors files (shards are below)."""
        return path


def _reference() -> Backend:
    from spec_tests.reference import ReferenceBackend

    return ReferenceBackend()


_BUILTINS: dict[str, Callable[[], Backend]] = {
    "dcp_impl-fs": DcpImplFS,
    "dcp_impl-fs-threads": lambda: DcpImplFS("dcp_impl-fs-threads", thread_count=4),
    "dcp_impl-hf": DcpImplHF,
    "dcp_impl-hf-consolidated": DcpImplHFConsolidated,
    "torch-fs": TorchFS,
    "torch-fs-threads": lambda: TorchFS("torch-fs-threads", thread_count=4),
    "torch-hf": TorchHF,
    "torch-hf-consolidated": TorchHFConsolidated,
    "torch-fsspec": TorchFsspec,
    "reference": _reference,
}

#: Names accepted by :func:`builtin` (and as a ``--dcp-backend`` SPEC).
BUILTIN_NAMES: tuple[str, ...] = tuple(_BUILTINS)


def builtin(name: str) -> Backend:
    """The built-in backend called ``name``; raise BackendSpecError for any other name."""
    try:
        factory = _BUILTINS[name]
    except KeyError:
        raise BackendSpecError(
            f"backend {name!r} is not a built-in: expected one of {', '.join(BUILTIN_NAMES)}"
            " (or module:attr for your own backend)"
        ) from None
    return factory()


def load_backend(spec: str) -> Backend:
    """Resolve a SPEC: a built-in name, or ``module:attr`` (an object or a zero-argument callable).

    Raises BackendSpecError naming what is wrong: an unknown built-in (listing them), a module
    that cannot be imported, a missing attribute, or an object lacking the Backend members.
    """
    if ":" not in spec:
        return builtin(spec)
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise BackendSpecError(f"backend spec {spec!r}: expected module:attr, both non-empty")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any import-time failure of the user's module is a spec error
        raise BackendSpecError(
            f"backend spec {spec!r}: cannot import module {module_name!r}: "
            f"{type(err).__name__}: {err}"
        ) from err
    obj: object = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise BackendSpecError(
                f"backend spec {spec!r}: {obj!r} has no attribute {part!r}"
            ) from err
    return _validated(spec, _instantiate(spec, obj))


def _instantiate(spec: str, obj: object) -> object:
    # A class that defines the members as class attributes would pass the runtime protocol
    # check itself, so classes are always called; other objects only when they are not
    # already a backend.
    if isinstance(obj, type) or (not isinstance(obj, Backend) and callable(obj)):
        try:
            return obj()
        except Exception as err:
            raise BackendSpecError(
                f"backend spec {spec!r}: calling {obj!r} with no arguments failed: "
                f"{type(err).__name__}: {err}"
            ) from err
    return obj


def _validated(spec: str, obj: object) -> Backend:
    missing = [
        m for m in ("name", "capabilities", "make_writer", "make_reader") if not hasattr(obj, m)
    ]
    if missing:
        raise BackendSpecError(
            f"backend spec {spec!r}: {obj!r} lacks Backend member(s) {', '.join(missing)}: "
            "expected name, capabilities, make_writer(path), make_reader(path)"
        )
    assert isinstance(obj, Backend)  # every protocol member was just checked
    if not isinstance(obj.name, str):
        raise BackendSpecError(f"backend spec {spec!r}: name must be a str, got {obj.name!r}")
    if not (callable(obj.make_writer) and callable(obj.make_reader)):
        raise BackendSpecError(f"backend spec {spec!r}: make_writer/make_reader must be callable")
    caps = obj.capabilities
    if caps is not None:
        if not isinstance(caps, frozenset | set) or not all(isinstance(c, str) for c in caps):
            raise BackendSpecError(
                f"backend spec {spec!r}: capabilities must be a frozenset of str or None, "
                f"got {caps!r}"
            )
        unknown = sorted(caps - CAPABILITIES.keys())
        if unknown:
            raise BackendSpecError(
                f"backend spec {spec!r}: backend {obj.name!r} claims unknown capabilities "
                f"{unknown}: expected names from spec_tests.backends.CAPABILITIES"
            )
    return obj


def probe(backend: Backend, location: str | None = None) -> None:
    """Make one writer and one reader for ``location``; BackendSpecError if either fails.

    ``location`` defaults to a scratch local directory; the plugin passes a URL under a URL
    ``--dcp-root``, for backends that take URLs only. A backend whose storage classes cannot
    even be built would otherwise fail every property separately (each one shrinking its
    failure), taking minutes to say one thing.
    """
    if location is not None:
        _probe_at(backend, location)
        return
    with tempfile.TemporaryDirectory(prefix="dcp-probe-") as scratch:
        _probe_at(backend, scratch)


def _probe_at(backend: Backend, location: str) -> None:
    from torch.distributed.checkpoint.storage import StorageReader, StorageWriter

    made: dict[str, type] = {"make_writer": StorageWriter, "make_reader": StorageReader}
    for method, expected in made.items():
        try:
            got = getattr(backend, method)(location)
        except Exception as err:  # whatever the backend raises, the run cannot proceed
            raise BackendSpecError(
                f"backend {backend.name!r}: {method}({location!r}) failed: "
                f"{type(err).__name__}: {err}"
            ) from err
        if not isinstance(got, expected):
            raise BackendSpecError(
                f"backend {backend.name!r}: {method}() returned {type(got).__name__}, "
                f"expected a {expected.__name__}"
            )
