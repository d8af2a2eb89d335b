"""Bytes entries reach the load planner only as what ``torch.load(weights_only=True)`` built.

DCP stores every non-tensor entry (a BYTE_IO item) as ``torch.save`` bytes, and torch's
``DefaultLoadPlanner.load_bytes`` hands them to ``torch.load(weights_only=False)``: a full
unpickler, so whoever wrote the checkpoint can run code on the machine that loads it. Both
dcp_impl readers therefore pass every bytes entry through :meth:`PicklePolicy.safe_copies`
before the planner sees any of them (:func:`deliver_bytes`).

The check is a load with torch's own weights-only unpickler: plain containers, numbers,
strings, tensors and the types torch allow-lists, plus whatever the process allows with
``torch.serialization.add_safe_globals``. That unpickler builds only allow-listed objects, so
checking an entry never runs its payload. On top of torch's list, :data:`DEFAULT_SAFE_GLOBALS`
allows ``io.BytesIO`` (DCP's own type for raw bytes entries) and numpy's plain-data arrays and
scalars (``numpy.random.get_state()`` holds an array). The objects it built are then walked:
numpy object arrays are refused, and so is an entry whose objects take more memory than
``max_expansion`` times its stored size (plus :data:`EXPANSION_ALLOWANCE`).

One unpickler: the planner never unpickles the stored bytes. It receives the checked objects
pickled again by ``torch.save``, so its full unpickler imports only what those objects'
own types name, never a module name the stored bytes chose (torch's weights-only unpickler
maps Python-2 names such as ``__builtin__`` at every protocol, Python's only below protocol
3: the same bytes would import different modules in the two).
docs/security.md states what this does and does not promise.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
import torch.serialization
from torch.distributed.checkpoint.planner import LoadPlanner, ReadItem

from dcp_impl._footprint import Footprint, footprint
from dcp_impl.errors import UnsafeCheckpointError

__all__ = [
    "DEFAULT_MAX_EXPANSION",
    "DEFAULT_SAFE_GLOBALS",
    "EXPANSION_ALLOWANCE",
    "PicklePolicy",
    "SafeGlobal",
    "deliver_bytes",
]

DEFAULT_MAX_EXPANSION = 128.0
"""Default of :attr:`PicklePolicy.max_expansion`: an entry's objects may take this many times
its stored size in memory (pickles of ordinary state expand less than 40 times)."""
EXPANSION_ALLOWANCE = 1 << 20
"""Bytes any entry's objects may take beyond ``max_expansion`` times its stored size."""

SafeGlobal: TypeAlias = Callable[..., Any] | tuple[Callable[..., Any], str]
"""What ``torch.serialization.add_safe_globals`` takes: an object, or (object, pickled name)."""

# torch's allow-list is process state; adding to it for one check must not race another
# reader's check, nor remove an entry the user had added already.
_ALLOW_LOCK = threading.Lock()
_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")


def _numpy_safe_globals() -> tuple[SafeGlobal, ...]:
    try:
        import numpy as np
    except ImportError:  # torch runs without numpy; then no entry can hold an array either
        return ()
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    # Pickles name these functions by the module of the numpy that wrote them.
    functions: list[SafeGlobal] = [
        (fn, f"{module}.multiarray.{fn.__name__}")
        for fn in (multiarray._reconstruct, multiarray.scalar)
        for module in ("numpy.core", "numpy._core")
    ]
    # Plain-data dtypes only: object ("O") and structured ("V") arrays can carry objects.
    data_dtypes = {type(np.dtype(code)) for code in np.typecodes["All"] if code not in "OV"}
    return (*functions, np.ndarray, np.dtype, *sorted(data_dtypes, key=lambda t: t.__name__))


DEFAULT_SAFE_GLOBALS: tuple[SafeGlobal, ...] = (bytes, io.BytesIO, *_numpy_safe_globals())
"""Allowed by default beside torch's list: bytes (``b""`` pickles as a call of
``builtins.bytes``, which torch's list lacks), BytesIO (holds bytes only), numpy's plain data."""


@dataclass(frozen=True, slots=True)
class PicklePolicy:
    """Which bytes entries a reader may hand to the load planner (whose ``torch.load`` runs
    any code the bytes ask for), and in what form.

    ``trust=True`` hands every entry over unchecked: only for checkpoints from a trusted
    source. Otherwise an entry must load under ``torch.load(weights_only=True)`` with torch's
    allow-list, the process's ``add_safe_globals``, numpy's plain data and ``safe_globals``;
    must hold no numpy object array; and its objects may take at most ``max_expansion`` times
    its stored size (plus :data:`EXPANSION_ALLOWANCE`) in memory.
    """

    trust: bool = False
    safe_globals: tuple[SafeGlobal, ...] = ()
    max_expansion: float = DEFAULT_MAX_EXPANSION

    def __post_init__(self) -> None:
        if not self.max_expansion > 0:
            raise ValueError(f"max_expansion: expected a number > 0, got {self.max_expansion!r}")

    def check(self, fqn: str, raw: bytes) -> None:
        """Raise :class:`UnsafeCheckpointError` unless the bytes entry ``fqn`` may be loaded."""
        self.check_all([(fqn, raw)])

    def check_all(self, entries: Iterable[tuple[str, bytes]]) -> None:
        """:meth:`check` each ``(fqn, raw)`` entry; the first refused one raises."""
        self.safe_copies(entries)

    def safe_copies(self, entries: Iterable[tuple[str, bytes]]) -> list[bytes]:
        """What the planner may unpickle for each ``(fqn, raw)`` entry: ``raw`` itself when
        trusted, else the checked objects pickled again (see the module's docstring).
        The first refused entry raises :class:`UnsafeCheckpointError`."""
        if self.trust:
            return [raw for _, raw in entries]
        loaded = self._load_all(entries)
        return [_pickled(fqn, obj) for fqn, obj in loaded]

    def _load_all(self, entries: Iterable[tuple[str, bytes]]) -> list[tuple[str, object]]:
        allowed = (*DEFAULT_SAFE_GLOBALS, *self.safe_globals)
        loaded = []
        with _allowing(allowed), warnings.catch_warnings():
            # torch warns about pickle protocols it did not write; the verdict is the error.
            warnings.simplefilter("ignore")
            for fqn, raw in entries:
                try:
                    obj = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
                except Exception as err:
                    raise UnsafeCheckpointError(
                        _refusal(fqn, _unsafe_globals(raw, err), err)
                    ) from err
                self._bound(fqn, obj, len(raw))
                loaded.append((fqn, obj))
        return loaded

    def _bound(self, fqn: str, obj: object, stored: int) -> None:
        limit = int(self.max_expansion * stored) + EXPANSION_ALLOWANCE
        try:
            footprint(obj, limit)
        except Footprint as stop:
            raise UnsafeCheckpointError(
                f"bytes entry {fqn!r} of {stored} stored bytes: expected objects of at most "
                f"{limit} bytes (max_expansion={self.max_expansion:g} times its size + "
                f"{EXPANSION_ALLOWANCE}) and no numpy object arrays, found that {stop.reason}. "
                "Only if the checkpoint comes from a trusted source: raise the reader's "
                "max_bytes_expansion, or pass trust_pickle=True (docs/security.md)"
            ) from None


def deliver_bytes(
    policy: PicklePolicy, planner: LoadPlanner, entries: Sequence[tuple[ReadItem, bytes]]
) -> None:
    """Check every bytes entry, then hand each to ``planner.load_bytes`` as
    :meth:`PicklePolicy.safe_copies` gives it.

    All are checked first, so a refused entry leaves the planner without any of them.
    """
    copies = policy.safe_copies((item.storage_index.fqn, raw) for item, raw in entries)
    for (item, _), copy in zip(entries, copies, strict=True):
        planner.load_bytes(item, io.BytesIO(copy))


def _pickled(fqn: str, obj: object) -> bytes:
    """``obj`` as ``torch.save`` bytes: what the planner's full unpickler reads instead of the
    stored bytes."""
    buffer = io.BytesIO()
    try:
        torch.save(obj, buffer)
    except Exception as err:  # an allowed user type that cannot be pickled again
        raise UnsafeCheckpointError(
            f"bytes entry {fqn!r}: expected objects torch.save can pickle again for the "
            f"planner, found {type(err).__name__}: {_last_line(err)}; pass trust_pickle=True "
            "only if the checkpoint comes from a trusted source (docs/security.md)"
        ) from err
    return buffer.getvalue()


@contextlib.contextmanager
def _allowing(extra: Sequence[SafeGlobal]) -> Iterator[None]:
    with _ALLOW_LOCK:
        present = torch.serialization.get_safe_globals()
        missing = [g for g in extra if g not in present]
        with torch.serialization.safe_globals(missing):
            yield


def _refusal(fqn: str, names: list[str], err: Exception) -> str:
    found = (
        f"found one that imports {', '.join(names)}"
        if names
        else f"found one it refuses ({_last_line(err)})"
    )
    allow = f"allow {', '.join(names)} with" if names else "pass"
    return (
        f"bytes entry {fqn!r}: expected an object torch.load(weights_only=True) accepts "
        f"(containers, numbers, strings, tensors, allow-listed types), {found}; unpickling it "
        f"could run code. Only if the checkpoint comes from a trusted source: {allow} the "
        "reader's safe_globals=[...], or pass trust_pickle=True (docs/security.md)"
    )


def _unsafe_globals(raw: bytes, err: Exception) -> list[str]:
    """The globals the entry would import beyond the allow-list, as far as can be told
    (called where the allow-list is in force)."""
    with contextlib.suppress(Exception):  # a scan that fails leaves the error's own words
        found = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(raw))
        if found:
            return sorted(found)
    return sorted(set(_GLOBAL_IN_MESSAGE.findall(str(err))))


def _last_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    informative = [line for line in lines if not line.startswith("Check the documentation")]
    return (informative or [type(err).__name__])[-1][:200]
