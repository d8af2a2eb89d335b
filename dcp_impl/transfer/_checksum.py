"""Item checksums: one digest of a whole item, or one digest per fixed-size piece of it.

The text of an item's checksum (docs/format.md §1.2, rule D15) is ``"xxh3_64:<16 hex
digits>"`` for an item of at most one piece, and ``"xxh3_64@<piece size>:<digest 1>...<digest
n>"`` for a longer one: piece ``k`` is the item's bytes ``[k * size, (k + 1) * size)`` (the last
one shorter), and a read of part of the item checks only the pieces it touches. A whole-item
checksum (all that version 2 documents hold) is the case of one piece as long as the item.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import xxhash

from dcp_impl.errors import InvalidMetadataError

__all__ = [
    "CHECKSUM_ALGORITHM",
    "CHECKSUM_TEXT",
    "PIECE_SIZE",
    "MIN_PIECE_SIZE",
    "MAX_PIECE_SIZE",
    "checksum",
    "piece_checksum",
    "piece_size_for",
    "Checksums",
    "Digest",
    "write_hashed",
]

CHECKSUM_ALGORITHM = "xxh3_64"
PIECE_SIZE = 1 << 20
"""The largest piece writers use (:func:`piece_size_for`): at most 32 hex digits of metadata
per MiB stored (0.003 %), and the most a sub-box read hashes beyond the bytes it needs is two
pieces per contiguous span."""
MIN_PIECE_SIZE = 1 << 12
"""Smallest piece size a document may declare: smaller pieces cost more metadata than bytes."""
MAX_PIECE_SIZE = 1 << 30
"""Largest piece size a document may declare: a verified read may hold a piece in memory."""
CHECKSUM_TEXT = re.compile(r"([a-z][a-z0-9_]{0,31})(?:@([1-9][0-9]{0,18}))?:([0-9a-f]+)")
"""The grammar of a checksum text (rules D13, D15): algorithm, optional piece size, digests."""
_MAX_WIDTH = 128  # hex digits of one digest


def checksum(data: memoryview | bytes) -> str:
    """The whole-item checksum of ``data``: ``"xxh3_64:<16 hex digits>"``."""
    return f"{CHECKSUM_ALGORITHM}:{xxhash.xxh3_64_hexdigest(data)}"


def piece_size_for(length: int, limit: int = PIECE_SIZE) -> int:
    """The piece size of an item of ``length`` bytes, pieces being at most ``limit`` bytes:
    the item cut into the fewest equal pieces, a power of two of them (the last one shorter
    where the length does not divide), but none under :data:`MIN_PIECE_SIZE` bytes.

    A power of two, so that the halves, quarters and eighths of the item start on piece
    boundaries. Resharding rows by a factor of two, as a job does that doubles its ranks,
    then reads and hashes only the bytes it loads, where fixed pieces would cut through the
    middle of pieces and read them whole (docs/format.md, "Piece checksums").
    """
    if length <= limit:
        return limit
    count = 1 << (-(-length // limit) - 1).bit_length()  # the power of two >= length / limit
    return max(-(-length // count), min(limit, MIN_PIECE_SIZE))


def piece_checksum(data: memoryview | bytes, piece_size: int = PIECE_SIZE) -> str:
    """The checksum text of ``data`` cut into pieces of at most ``piece_size`` bytes
    (:func:`piece_size_for`; one digest, the whole-item form, when ``data`` fits in one)."""
    view = memoryview(data).cast("B")
    if len(view) <= piece_size:
        return checksum(view)
    size = piece_size_for(len(view), piece_size)
    digests = [_digest(view[i : i + size]) for i in range(0, len(view), size)]
    return _pieced(size, digests)


def _digest(data: memoryview | bytes) -> str:
    return xxhash.xxh3_64_hexdigest(data)


def _pieced(piece_size: int, digests: list[str]) -> str:
    return f"{CHECKSUM_ALGORITHM}@{piece_size}:{''.join(digests)}"


@dataclass(frozen=True, slots=True)
class Checksums:
    """An item's checksum text, parsed against the item's length (rule D15).

    ``piece_size`` is None for a whole-item checksum (one piece as long as the item);
    ``digests`` holds ``count`` digests of ``width`` hex digits each, back to back.
    """

    algorithm: str
    piece_size: int | None
    digests: str
    width: int
    length: int

    @classmethod
    def parse(cls, text: str, length: int) -> Checksums:
        """Parse ``text``, the checksum of an item of ``length`` bytes; a malformed text,
        a piece size out of range or a digest count that does not match the length raise
        :class:`~dcp_impl.errors.InvalidMetadataError` saying what was expected."""
        match = CHECKSUM_TEXT.fullmatch(text) if type(text) is str else None
        if match is None:
            raise InvalidMetadataError(
                'expected "<algorithm>:<lowercase hex>" or '
                f'"<algorithm>@<piece size>:<lowercase hex>", found {text!r:.80}'
            )
        algorithm, size_text, digests = match.groups()
        if size_text is None:
            if len(digests) > _MAX_WIDTH:
                raise InvalidMetadataError(
                    f"expected a digest of at most {_MAX_WIDTH} hex digits, found {len(digests)}"
                )
            return cls(algorithm, None, digests, len(digests), length)
        piece_size = int(size_text)
        if not MIN_PIECE_SIZE <= piece_size <= MAX_PIECE_SIZE:
            raise InvalidMetadataError(
                f"expected a piece size in [{MIN_PIECE_SIZE}, {MAX_PIECE_SIZE}], found {piece_size}"
            )
        count = max(1, -(-length // piece_size))
        width, rest = divmod(len(digests), count)
        if rest or not 1 <= width <= _MAX_WIDTH:
            raise InvalidMetadataError(
                f"expected {count} digests (one per {piece_size}-byte piece of "
                f"{length} bytes) of equal width, found {len(digests)} hex digits"
            )
        return cls(algorithm, piece_size, digests, width, length)

    @property
    def count(self) -> int:
        """How many pieces (and digests) the item has."""
        return len(self.digests) // self.width

    @property
    def size(self) -> int:
        """Bytes per piece (the last one may be shorter); an item's length for a whole one."""
        return self.piece_size if self.piece_size is not None else max(self.length, 1)

    def digest(self, k: int) -> str:
        """The expected digest of piece ``k``."""
        return self.digests[k * self.width : (k + 1) * self.width]

    def span(self, k: int) -> tuple[int, int]:
        """Piece ``k``'s bytes ``[start, stop)`` in the item."""
        start = k * self.size
        return start, min(start + self.size, self.length)

    def touching(self, start: int, stop: int) -> range:
        """The pieces holding any of the item's bytes ``[start, stop)`` (none when empty)."""
        if stop <= start:
            return range(0)
        return range(start // self.size, (stop - 1) // self.size + 1)

    def found(self, data: memoryview | bytes) -> str:
        """The digest of ``data`` in this checksum's algorithm."""
        if self.algorithm != CHECKSUM_ALGORITHM:
            raise InvalidMetadataError(
                f"expected algorithm {CHECKSUM_ALGORITHM!r}, found {self.algorithm!r}"
            )
        return _digest(data)


class Digest:
    """The checksum of bytes fed in order with :meth:`update`."""

    def __init__(self) -> None:
        self._hash = xxhash.xxh3_64()

    def update(self, data: memoryview | bytes) -> None:
        """Append ``data`` to the bytes hashed so far."""
        self._hash.update(data)

    def hexdigest(self) -> str:
        """The digest of everything fed so far."""
        return self._hash.hexdigest()

    def checksum(self) -> str:
        """The whole-item checksum text of everything fed so far."""
        return f"{CHECKSUM_ALGORITHM}:{self._hash.hexdigest()}"


def write_hashed(
    data: memoryview,
    write: Callable[[memoryview], None],
    piece_size: int = PIECE_SIZE,
    *,
    step: int,
) -> str:
    """Pass ``data`` to ``write`` in order, in steps of about ``step`` bytes (a whole number
    of pieces), and return its checksum text, one digest per piece of at most ``piece_size``
    bytes (:func:`piece_checksum`).

    Data over one step is hashed on a thread of the process's hashing pool while ``write``
    runs (both release the GIL), so the checksum costs almost no time where a second core is
    free (measured: perf/README.md). The hashing never runs ahead of the writer by more than
    the step both are on, and a failing ``write`` stops it with it.
    """
    if len(data) <= piece_size:
        write(data)
        return checksum(data)
    piece_size = piece_size_for(len(data), piece_size)
    step = max(piece_size, step // piece_size * piece_size)
    digests: list[str] = []

    def hash_step(part: memoryview) -> None:
        digests.extend(_digest(part[i : i + piece_size]) for i in range(0, len(part), piece_size))

    if len(data) <= step:
        hash_step(data)
        write(data)
        return _pieced(piece_size, digests)
    hasher = _hasher()
    for start in range(0, len(data), step):
        part = data[start : start + step]
        hashed = hasher.submit(hash_step, part)
        try:
            write(part)
        finally:
            hashed.result()
    return _pieced(piece_size, digests)


_HASHERS = min(8, os.cpu_count() or 1)
"""Hashing threads shared by all writers: one per core, up to 8."""
_hasher_lock = threading.Lock()
_hasher_pool: ThreadPoolExecutor | None = None


def _hasher() -> ThreadPoolExecutor:
    """The process's hashing pool, made on first use. One pool for every item, not one per
    item: a save of many items would otherwise start and join a thread per item."""
    global _hasher_pool
    with _hasher_lock:
        if _hasher_pool is None:
            _hasher_pool = ThreadPoolExecutor(_HASHERS, thread_name_prefix="dcp_impl-hash")
        return _hasher_pool


def _forget_hasher() -> None:
    """In a forked child: the parent's hashing threads (and maybe its held lock) are not there."""
    global _hasher_lock, _hasher_pool
    _hasher_lock = threading.Lock()
    _hasher_pool = None


os.register_at_fork(after_in_child=_forget_hasher)
