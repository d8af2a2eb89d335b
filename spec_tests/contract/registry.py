"""How a SPEC names a backend: the built-in registry, ``module:attr`` and ``[CONFIG]``.

The suite selects a backend with ``--dcp-backend=SPEC`` where SPEC is a built-in name or
``module:attr``, optionally followed by ``[CONFIG]``, one of the backend's named configurations
(:func:`configurations`); :func:`load_backend` resolves a SPEC, :func:`builtin` returns a
built-in. Users reach these through :mod:`spec_tests.backends`.
"""

from __future__ import annotations

import importlib
import tempfile

from spec_tests.contract.builtins import BUILTINS
from spec_tests.contract.capabilities import ASYNC_MODES, CAPABILITIES
from spec_tests.contract.protocol import Backend

__all__ = [
    "BUILTIN_NAMES",
    "DEFAULTS",
    "BackendSpecError",
    "builtin",
    "check_constructible",
    "configurations",
    "load_backend",
]


#: The configuration every ``configurations()`` mapping must name.
DEFAULTS = "defaults"


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
    """Resolve a SPEC: a built-in name, or ``module:attr`` (an object or a zero-argument callable),
    either followed by ``[CONFIG]`` to pick one of the backend's named configurations.

    Raises BackendSpecError naming what is wrong: an unknown built-in (listing them), a module
    that cannot be imported, a missing attribute, an object lacking the Backend members, or a
    configuration the backend does not name (listing those it does).
    """
    base, config = _split_config(spec)
    if config is None:
        return _load(spec)
    configs = configurations(_load(base), spec=base)
    if config not in configs:
        raise BackendSpecError(
            f"backend spec {spec!r}: no configuration {config!r}: expected one of "
            f"{', '.join(configs) or '(none: the backend has no configurations member)'}"
        )
    return configs[config]


def configurations(backend: Backend, *, spec: str | None = None) -> dict[str, Backend]:
    """The backend's named configurations (its optional ``configurations()``), each validated.

    Empty for a backend without the member. Raises BackendSpecError when the mapping lacks
    :data:`DEFAULTS`, or a configuration is no backend or repeats another's name.
    """
    member = getattr(backend, "configurations", None)
    if member is None:
        return {}
    where = spec or backend.name
    found = dict(member())
    if DEFAULTS not in found:
        raise BackendSpecError(
            f"backend spec {where!r}: configurations() must name {DEFAULTS!r} (the writer and "
            f"reader constructed with no options); found {', '.join(found) or 'none'}"
        )
    out = {
        name: _validated(f"{where}[{name}]", _instantiate(f"{where}[{name}]", obj))
        for name, obj in found.items()
    }
    names = [b.name for b in out.values()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BackendSpecError(
            f"backend spec {where!r}: configurations share the name(s) {repeated}: each needs "
            "its own (the matrix's columns and expected-failure files go by name)"
        )
    return out


def _split_config(spec: str) -> tuple[str, str | None]:
    if not spec.endswith("]"):
        return spec, None
    base, bracket, config = spec[:-1].rpartition("[")
    if not bracket or not base or not config:
        raise BackendSpecError(f"backend spec {spec!r}: expected SPEC[CONFIG], both non-empty")
    return base, config


def _load(spec: str) -> Backend:
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
    mode = getattr(obj, "async_save", None)
    if mode is not None and mode not in ASYNC_MODES:
        raise BackendSpecError(
            f"backend spec {spec!r}: async_save must be None or one of {', '.join(ASYNC_MODES)}; "
            f"got {mode!r}"
        )
    return obj


def check_constructible(backend: Backend, location: str | None = None) -> None:
    """Make one writer and one reader for ``location``; BackendSpecError if either fails.

    ``location`` defaults to a scratch local directory; the plugin passes a URL under a URL
    ``--dcp-root``, for backends that take URLs only. A backend whose storage classes cannot
    even be built would otherwise fail every property separately (each one shrinking its
    failure), taking minutes to say one thing.
    """
    if location is not None:
        _construct_at(backend, location)
        return
    with tempfile.TemporaryDirectory(prefix="dcp-probe-") as scratch:
        _construct_at(backend, scratch)


def _construct_at(backend: Backend, location: str) -> None:
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
