"""Item checksums: ``"xxh3_64:<16 hex digits>"``, computed at once, piece by piece, or
beside a writer on a second core."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import xxhash

__all__ = ["CHECKSUM_ALGORITHM", "checksum", "Digest", "write_hashed"]

CHECKSUM_ALGORITHM = "xxh3_64"
PIECE = 8 << 20
""":func:`write_hashed` hands bytes to the writer and the hash in pieces this big."""


def checksum(data: memoryview | bytes) -> str:
    """The checksum string of ``data``: ``"xxh3_64:<16 hex digits>"``."""
    return f"{CHECKSUM_ALGORITHM}:{xxhash.xxh3_64(data).hexdigest()}"


class Digest:
    """The checksum of bytes fed in order with :meth:`update`."""

    def __init__(self) -> None:
        self._hash = xxhash.xxh3_64()

    def update(self, data: memoryview | bytes) -> None:
        """Append ``data`` to the bytes hashed so far."""
        self._hash.update(data)

    def checksum(self) -> str:
        """The checksum string of everything fed so far."""
        return f"{CHECKSUM_ALGORITHM}:{self._hash.hexdigest()}"


def write_hashed(data: memoryview, write: Callable[[memoryview], None]) -> str:
    """Pass ``data`` to ``write`` in order, in pieces, and return its checksum.

    Data over one piece is hashed on a helper thread while ``write`` runs (both release
    the GIL), so the checksum costs almost no time where a second core is free (measured:
    perf/README.md). The helper never runs ahead of the writer by more than the piece both
    are on, and a failing ``write`` stops the hashing with it.
    """
    digest = Digest()
    if len(data) <= PIECE:
        digest.update(data)
        write(data)
        return digest.checksum()
    with ThreadPoolExecutor(1, thread_name_prefix="dcp_impl-hash") as hasher:
        for start in range(0, len(data), PIECE):
            piece = data[start : start + PIECE]
            hashed = hasher.submit(digest.update, piece)
            try:
                write(piece)
            finally:
                hashed.result()
    return digest.checksum()
