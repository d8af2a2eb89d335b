"""The backend contract the conformance suite accepts (fixed: outside tools depend on it).

A backend is any object with ``name``, ``capabilities`` (a frozenset of names from
:data:`spec_tests.contract.capabilities.CAPABILITIES`, or None for "claims every capability"),
``make_writer(path)`` and ``make_reader(path)``; optional members are listed in
:data:`OPTIONAL_MEMBERS`. The bottom of the suite's import graph: it imports nothing of the
suite, so every other module may name :class:`Backend`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch.distributed.checkpoint.storage import StorageReader, StorageWriter

__all__ = ["OPTIONAL_MEMBERS", "Backend"]


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
    "configurations": (
        "configurations() -> Mapping[str, Backend]: the backend's named configurations, "
        "'defaults' (its writer and reader constructed with no options) among them, each a "
        "backend with a name of its own; SPEC[CONFIG] selects one, and the matrix runs each "
        "as a column"
    ),
    "async_save": (
        "async_save: 'thread' or 'process' (or None): every save the suite makes goes as "
        "dcp.async_save in that mode presents it to the backend: staged by the writer (if an "
        "AsyncStager) or torch's DefaultStager, the writer pickled in 'process' mode, the "
        "caller's tensors changed once staged, the storage calls on another thread"
    ),
}
