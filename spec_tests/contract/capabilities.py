"""The capability vocabulary: what a backend may claim, and what a claim means.

One table, name -> meaning: a ``dtype:<name>`` row for every row of
:data:`dcp_impl.dtypes.DTYPES`, then the general capabilities. A backend claims a
frozenset of these names (or None: every one). Data capabilities it does not claim
are still attempted by the ``unclaimed`` properties and must refuse loudly; the others
turn the properties that need them into skips.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dcp_impl.dtypes import DTYPES

if TYPE_CHECKING:
    import torch

    from spec_tests.contract.protocol import Backend

__all__ = [
    "ASYNC_MODES",
    "PIECE_REACH",
    "CAPABILITIES",
    "DTYPE_CAPS",
    "GENERAL_CAPS",
    "claimed_dtypes",
    "claims",
]


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
    "integrity-pieces": (
        "with integrity: a read of part of a stored chunk checks only the stored bytes near the "
        "ones it returns, so damage more than PIECE_REACH (1 MiB) away from all of them does not "
        "fail it (checksums over pieces of at most 1 MiB, each checked on its own)"
    ),
    "atomic-commit": (
        "a save killed at any point leaves the previous checkpoint loadable "
        "and never exposes a mixed one"
    ),
    "multiprocess": "works from real processes (gloo process group)",
    "async": (
        "dcp.async_save works: THREAD mode with any stager, PROCESS mode (the writer pickles "
        "into torch's daemon) where multiprocess is claimed too"
    ),
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

DTYPE_CAPS = frozenset(f"dtype:{row.name}" for row in DTYPES)
GENERAL_CAPS = frozenset(_GENERAL_CAPABILITIES)

#: How far from every byte a partial read returns damage must lie for ``integrity-pieces`` to
#: promise that the read does not fail: the largest piece a checksum may cover.
PIECE_REACH = 1 << 20

#: The values a backend's optional ``async_save`` member may take besides None: the
#: ``dcp.async_save`` modes whose view of the backend the suite plays
#: (spec_tests.sim.harness.staged).
ASYNC_MODES = ("thread", "process")


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
