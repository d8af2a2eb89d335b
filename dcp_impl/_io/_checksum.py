"""Item checksums: ``"xxh3_64:<16 hex digits>"``, computed at once or piece by piece."""

from __future__ import annotations

import xxhash

__all__ = ["CHECKSUM_ALGORITHM", "Digest"]

CHECKSUM_ALGORITHM = "xxh3_64"


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
