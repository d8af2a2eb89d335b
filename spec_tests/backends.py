"""The backend contract the conformance suite accepts, and how a SPEC names a backend.

A backend is any object with ``name``, ``capabilities`` (a frozenset of names
from :data:`CAPABILITIES`, or None for "claims every capability"),
``make_writer(path)`` and ``make_reader(path)``; optional members are listed in
:data:`OPTIONAL_MEMBERS`. The suite selects one with
``--dcp-backend=SPEC`` where SPEC is a built-in name or ``module:attr``;
:func:`load_backend` resolves a SPEC, :func:`builtin` returns a built-in.

The vocabulary lives in :mod:`spec_tests.capabilities`, the built-ins in
:mod:`spec_tests.builtins`; both are re-exported here, where outside tools look for them.
"""

from __future__ import annotations

import importlib
import tempfile
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from spec_tests.builtins import (
    BUILTINS,
    DcpImplFS,
    DcpImplHF,
    DcpImplHFConsolidated,
    TorchFS,
    TorchFsspec,
    TorchHF,
    TorchHFConsolidated,
)
from spec_tests.capabilities import (
    CAPABILITIES,
    claimed_dtypes,
    claims,
)

if TYPE_CHECKING:
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
    "trusting_reader": (
        "trusting_reader(path) -> StorageReader: a reader for path that trusts the checkpoint "
        "(dcp_impl's trust_pickle=True): it hands every non-tensor entry to the load planner, "
        "so legitimate objects that are not weights_only-safe load exactly (the user-objects "
        "property; without the member only the default reader is tried)"
    ),
    "cleanup": (
        "cleanup(path): free what the backend holds for a location the suite is done with "
        "(called before the suite removes the location; an in-memory store frees it)"
    ),
}


class BackendSpecError(ValueError):
    """A ``--dcp-backend`` SPEC names no usable backend."""


#: Names accepted by :func:`builtin` (and as a ``--dcp-backend`` SPEC).
BUILTIN_NAMES: tuple[str, ...] = tuple(BUILTINS)


def builtin(name: str) -> Backend:
    """The built-in backend called ``name``; raise BackendSpecError for any other name."""
    try:
        factory = BUILTINS[name]
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
