"""Byte-level I/O shared by dcp_impl's storage backends: files and byte ranges <-> tensors.

Nothing here knows a checkpoint format; a backend maps its metadata onto these pieces:

* :func:`atomic_write` commits a small file (temp file in the same directory, optional
  fsync, ``os.replace``, fsync of the directory). :func:`fsync_dir` is the last step alone.
* :class:`DataFileWriter` appends the logical values of tensors (any device, any strides)
  or raw bytes to one new data file and returns a :class:`StoredRange` per item: its byte
  offset, length and checksum, hashed while the bytes are written.
* :func:`read_into` executes :class:`ReadRequest` s. A request names one stored item (a
  row-major chunk at a byte range of a file) and the :class:`Target` s to fill from it: a
  sub-box of the chunk and a destination tensor of the sub-box's sizes. Bytes go straight
  into a destination when it is a contiguous CPU tensor and the sub-box is one exact byte
  span (``layout.byte_span``); otherwise the enclosing span is read into a reusable
  staging buffer and the sub-box view is copied out. CUDA destinations are staged in pinned
  buffers and copied non-blocking on a side stream while the next read proceeds.
* :func:`parallel_map` runs work on a thread pool: workers pull items in order, the first
  failure stops new work and is re-raised in the caller with its original traceback.

Checksums are ``"xxh3_64:<16 hex digits>"`` (:func:`checksum`). With ``verify=True``,
:func:`read_into` never lets a byte of an item reach a destination unverified: an item read
whole is hashed where it lands; an item read in part is read whole into a staging buffer,
hashed, and only then copied out. ``verify=False`` reads only the span each target needs.
A mismatch, a short file or a missing file raises ``CorruptCheckpointError`` naming the
file and the item; when ``read_into`` raises, the destinations' contents are unspecified.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

import torch
import xxhash

from dcp_impl import dtypes
from dcp_impl.errors import CorruptCheckpointError, InvalidMetadataError, UnsupportedError
from dcp_impl.layout import Box, byte_span

__all__ = [
    "CHECKSUM_ALGORITHM",
    "checksum",
    "atomic_write",
    "fsync_dir",
    "StoredRange",
    "DataFileWriter",
    "tensor_bytes",
    "Target",
    "ReadRequest",
    "DeviceCopier",
    "read_into",
    "Worker",
    "parallel_map",
]

CHECKSUM_ALGORITHM = "xxh3_64"
_PIECE = 8 << 20  # write in pieces that stay in cache between hashing and writing

T = TypeVar("T")
R = TypeVar("R")
_T_contra = TypeVar("_T_contra", contravariant=True)
_R_co = TypeVar("_R_co", covariant=True)


def checksum(data: memoryview | bytes) -> str:
    """The checksum string of ``data``: ``"xxh3_64:<16 hex digits>"``."""
    return f"{CHECKSUM_ALGORITHM}:{xxhash.xxh3_64(data).hexdigest()}"


# --------------------------------------------------------------------------- atomic commit


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or file creation in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically: readers see the old file or the new one.

    The temp file lives in the same directory (``os.replace`` is atomic only within one
    file system) and is removed if anything fails before the rename.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with open(fd, "wb", closefd=True) as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(directory)


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True, slots=True)
class StoredRange:
    """Where :class:`DataFileWriter` put one item: bytes ``[offset, offset + length)``."""

    offset: int
    length: int
    checksum: str


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The logical values of ``tensor`` as row-major bytes (copied only when necessary).

    Any device, strides, conjugate or negative view; the result is a flat byte view of a
    contiguous CPU tensor, itself valid while the returned view is alive.
    """
    if tensor.layout != torch.strided:
        raise UnsupportedError(f"tensor layout {tensor.layout} cannot be stored: expected strided")
    dtypes.by_torch(tensor.dtype)  # unknown dtypes are an error, never a guess
    return _byte_view(tensor.detach().resolve_conj().resolve_neg().to("cpu").contiguous())


class DataFileWriter:
    """Appends items to one new data file; use as a context manager.

    The file is created exclusively (an existing file is never overwritten). ``close``
    flushes and, with ``sync``, fsyncs it; leaving the ``with`` block by an exception
    removes the file instead.
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True) -> None:
        self.path = os.fspath(path)
        self._sync = sync
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._offset = 0

    def write_tensor(self, tensor: torch.Tensor) -> StoredRange:
        """Append the logical values of ``tensor`` (see :func:`tensor_bytes`)."""
        return self.write_bytes(tensor_bytes(tensor))

    def write_bytes(self, data: bytes | memoryview) -> StoredRange:
        """Append raw bytes."""
        if self._fd is None:
            raise ValueError(f"{self.path}: write after close")
        view = memoryview(data).cast("B")
        digest = xxhash.xxh3_64()
        for start in range(0, len(view), _PIECE):
            piece = view[start : start + _PIECE]
            digest.update(piece)
            _write_all(self._fd, piece)
        stored = StoredRange(self._offset, len(view), f"{CHECKSUM_ALGORITHM}:{digest.hexdigest()}")
        self._offset += len(view)
        return stored

    def close(self) -> None:
        """Flush (and fsync, with ``sync``) and close the file."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Close and remove the file."""
        with contextlib.suppress(OSError):
            self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> DataFileWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


# --------------------------------------------------------------------------- thread pool


class Worker(Protocol[_T_contra, _R_co]):
    """Per-thread state for :func:`parallel_map`: called once per item, closed at the end."""

    def __call__(self, item: _T_contra, /) -> _R_co: ...

    def close(self) -> None: ...


def parallel_map(
    items: Sequence[T], make_worker: Callable[[], Worker[T, R]], *, thread_count: int = 1
) -> list[R]:
    """Apply workers to ``items`` on ``thread_count`` threads; results in item order.

    Each thread makes one worker and pulls the next item in order. After the first
    failure no thread starts another item; the first exception is re-raised here with its
    original traceback, and the others are attached to it as notes.
    """
    slots: list[R | None] = [None] * len(items)
    pending = iter(range(len(items)))
    lock = threading.Lock()
    stop = threading.Event()

    def drain() -> None:
        worker = make_worker()
        try:
            while not stop.is_set():
                with lock:
                    index = next(pending, None)
                if index is None:
                    return
                try:
                    slots[index] = worker(items[index])
                except BaseException:
                    stop.set()
                    raise
        finally:
            worker.close()

    threads = max(1, min(thread_count, len(items)))
    if threads == 1:
        drain()
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="dcp_impl-io") as pool:
            futures = [pool.submit(drain) for _ in range(threads)]
        errors = [e for f in futures if (e := f.exception()) is not None]
        if errors:
            for other in errors[1:]:
                errors[0].add_note(f"another I/O thread also failed: {other!r}")
            raise errors[0]
    return cast("list[R]", slots)  # no failure, so every slot was filled


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Target:
    """Fill ``dest`` with the sub-box ``sub`` of a stored chunk (``sub`` in the chunk's frame).

    ``dest`` has ``sub.sizes`` as its shape and may live on any device with any strides.
    """

    sub: Box
    dest: torch.Tensor

    def __post_init__(self) -> None:
        if tuple(self.dest.shape) != self.sub.sizes:
            raise ValueError(f"destination shape {tuple(self.dest.shape)} != sub-box {self.sub}")


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One stored item (a row-major chunk at ``[offset, offset + length)`` of ``path``).

    ``label`` names the item in error messages; ``checksum`` (as :func:`checksum`) is
    checked when the item is read with ``verify=True``, and skipped when None.
    """

    path: str
    offset: int
    length: int
    chunk_sizes: tuple[int, ...]
    dtype: torch.dtype
    targets: tuple[Target, ...]
    checksum: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        expected = Box.full(self.chunk_sizes).numel * dtypes.by_torch(self.dtype).itemsize
        if self.offset < 0 or self.length != expected:
            raise InvalidMetadataError(
                f"{self.path}: item {self.label}: expected {expected} bytes for a "
                f"{self.dtype} chunk of sizes {self.chunk_sizes} at offset >= 0, "
                f"found {self.length} bytes at offset {self.offset}"
            )
        if self.checksum is not None and not self.checksum.startswith(f"{CHECKSUM_ALGORITHM}:"):
            raise InvalidMetadataError(
                f"{self.path}: item {self.label}: checksum {self.checksum!r} is not "
                f"'{CHECKSUM_ALGORITHM}:<hex>'"
            )


class DeviceCopier(Protocol):
    """Copies staged host bytes into destinations, possibly asynchronously."""

    def copy(self, dest: torch.Tensor, src: torch.Tensor) -> object:
        """Start ``dest.copy_(src)``; return a token that :meth:`wait` accepts."""
        ...

    def wait(self, token: object) -> None:
        """Block until the copy that returned ``token`` no longer reads its source."""
        ...

    def synchronize(self) -> None:
        """Block until every copy started so far is complete."""
        ...


class _SyncCopier:
    def copy(self, dest: torch.Tensor, src: torch.Tensor) -> object:
        dest.copy_(src)
        return None

    def wait(self, token: object) -> None:
        pass

    def synchronize(self) -> None:
        pass


class _CudaCopier:
    """Non-blocking host-to-device copies on one side stream per reading thread and device."""

    def __init__(self, device: torch.device) -> None:
        self._stream = torch.cuda.Stream(device=device)

    def copy(self, dest: torch.Tensor, src: torch.Tensor) -> object:
        # dest was allocated on the caller's stream; order our copy after its pending work.
        self._stream.wait_stream(torch.cuda.current_stream(dest.device))
        with torch.cuda.stream(self._stream):
            dest.copy_(src, non_blocking=True)
            dest.record_stream(self._stream)
            event = torch.cuda.Event()
            event.record(self._stream)
        return event

    def wait(self, token: object) -> None:
        if isinstance(token, torch.cuda.Event):
            token.synchronize()

    def synchronize(self) -> None:
        self._stream.synchronize()


class _Staging:
    """Two reusable host buffers: one is filled while the other's copies are in flight."""

    def __init__(self, pin: bool) -> None:
        self._pin = pin
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._in_flight: list[list[tuple[DeviceCopier, object]]] = [[], []]
        self._next = 0

    def take(self, nbytes: int) -> tuple[int, torch.Tensor]:
        """A buffer of ``nbytes`` that no pending copy still reads, and its slot."""
        slot, self._next = self._next, 1 - self._next
        for copier, token in self._in_flight[slot]:
            copier.wait(token)
        self._in_flight[slot].clear()
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < nbytes:
            buffer = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=self._pin)
            self._buffers[slot] = buffer
        return slot, buffer[:nbytes]

    def used_by(self, slot: int, copier: DeviceCopier, token: object) -> None:
        """Record a copy that reads the buffer of ``slot``."""
        self._in_flight[slot].append((copier, token))


def _direct(dest: torch.Tensor) -> bool:
    """Whether bytes can be read straight into ``dest``'s memory."""
    return (
        dest.device.type == "cpu"
        and dest.layout == torch.strided
        and dest.is_contiguous()
        and not dest.is_conj()
        and not dest.is_neg()
    )


def _byte_view(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, sharing its memory."""
    flat = tensor.detach().reshape(-1)
    if flat.numel() <= 1:
        # A contiguous tensor of at most one element may carry any stride; view() needs 1.
        flat = flat.as_strided((flat.numel(),), (1,))
    return flat.view(torch.uint8).numpy().data.cast("B")


def _row_major_strides(sizes: Sequence[int]) -> tuple[int, ...]:
    strides = [1] * len(sizes)
    for d in range(len(sizes) - 2, -1, -1):
        strides[d] = strides[d + 1] * sizes[d + 1]
    return tuple(strides)


class _Reader:
    """One reading thread's state: open files, staging buffers, device copiers."""

    def __init__(
        self, *, verify: bool, stage_all: bool, pin: bool, copier: DeviceCopier | None
    ) -> None:
        self._verify = verify
        self._stage_all = stage_all
        self._fds: dict[str, int] = {}
        self._staging = _Staging(pin)
        self._injected = copier
        self._copiers: dict[torch.device, DeviceCopier] = {}

    def __call__(self, request: ReadRequest) -> None:
        targets = [t for t in request.targets if not t.sub.is_empty]
        if not targets:
            return
        if self._verify and request.checksum is not None:
            self._read_verified(request, targets)
        else:
            self._read_spans(request, targets)

    def _read_verified(self, request: ReadRequest, targets: list[Target]) -> None:
        """Read the whole item, check it, then hand out its bytes."""
        first = targets[0]
        if (
            len(targets) == 1
            and first.sub == Box.full(request.chunk_sizes)
            and self._is_direct(request, first)
        ):
            view = _byte_view(first.dest)
            self._pread(request, view, request.offset)
            self._check(request, view)
            return
        slot, staged = self._staging.take(request.length)
        view = _byte_view(staged)
        self._pread(request, view, request.offset)
        self._check(request, view)
        itemsize = dtypes.by_torch(request.dtype).itemsize
        for target in targets:
            start, _, _ = byte_span(request.chunk_sizes, target.sub, itemsize)
            self._copy_out(request, staged, slot, target, start)

    def _read_spans(self, request: ReadRequest, targets: list[Target]) -> None:
        """Read only the byte span each target needs."""
        itemsize = dtypes.by_torch(request.dtype).itemsize
        for target in targets:
            start, length, exact = byte_span(request.chunk_sizes, target.sub, itemsize)
            if exact and self._is_direct(request, target):
                self._pread(request, _byte_view(target.dest), request.offset + start)
            else:
                slot, staged = self._staging.take(length)
                self._pread(request, _byte_view(staged), request.offset + start)
                self._copy_out(request, staged, slot, target, 0)

    def _is_direct(self, request: ReadRequest, target: Target) -> bool:
        # A destination of another dtype takes a converting copy_, never raw bytes.
        return not self._stage_all and target.dest.dtype == request.dtype and _direct(target.dest)

    def _copy_out(
        self, request: ReadRequest, staged: torch.Tensor, slot: int, target: Target, start: int
    ) -> None:
        """Copy ``target.sub`` out of ``staged``, whose byte ``start`` is the sub-box's first."""
        values = staged[start:].view(request.dtype)
        source = values.as_strided(target.sub.sizes, _row_major_strides(request.chunk_sizes))
        copier = self._copier_for(target.dest)
        self._staging.used_by(slot, copier, copier.copy(target.dest, source))

    def _copier_for(self, dest: torch.Tensor) -> DeviceCopier:
        if self._injected is not None:
            return self._injected
        device = dest.device
        if device not in self._copiers:
            cuda = device.type == "cuda"
            self._copiers[device] = _CudaCopier(device) if cuda else _SyncCopier()
        return self._copiers[device]

    def _pread(self, request: ReadRequest, view: memoryview, offset: int) -> None:
        fd = self._open(request)
        done = 0
        while done < len(view):
            count = os.preadv(fd, [view[done:]], offset + done)
            if count == 0:
                raise CorruptCheckpointError(
                    f"{request.path}: item {request.label} is truncated: expected bytes up to "
                    f"{offset + len(view)}, found end of file at {offset + done}"
                )
            done += count

    def _open(self, request: ReadRequest) -> int:
        fd = self._fds.get(request.path)
        if fd is None:
            try:
                fd = os.open(request.path, os.O_RDONLY)
            except FileNotFoundError as err:
                raise CorruptCheckpointError(
                    f"{request.path}: data file of item {request.label} is missing"
                ) from err
            self._fds[request.path] = fd
        return fd

    @staticmethod
    def _check(request: ReadRequest, view: memoryview) -> None:
        found = checksum(view)
        if found != request.checksum:
            raise CorruptCheckpointError(
                f"{request.path}: item {request.label} at bytes "
                f"[{request.offset}, {request.offset + request.length}) fails its checksum: "
                f"expected {request.checksum}, found {found}"
            )

    def close(self) -> None:
        try:
            copiers = list(self._copiers.values())
            if self._injected is not None:
                copiers.append(self._injected)
            for copier in copiers:
                copier.synchronize()
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def read_into(
    requests: Sequence[ReadRequest],
    *,
    thread_count: int = 1,
    verify: bool = True,
    stage_all: bool = False,
    copier: Callable[[], DeviceCopier] | None = None,
) -> None:
    """Fill every target of every request; return once all bytes are in place.

    Requests are read sorted by file and offset, on ``thread_count`` threads, each of
    which opens a file at most once. Device copies are complete when this returns.
    ``stage_all`` sends every target through the staging buffers and ``copier`` replaces
    the device copy (one per thread): both exist so that CPU tests exercise the CUDA path.
    """
    ordered = sorted(requests, key=lambda r: (r.path, r.offset))
    pin = torch.cuda.is_available() and any(
        t.dest.device.type == "cuda" for r in ordered for t in r.targets
    )

    def make_worker() -> _Reader:
        return _Reader(
            verify=verify,
            stage_all=stage_all,
            pin=pin,
            copier=copier() if copier is not None else None,
        )

    parallel_map(ordered, make_worker, thread_count=thread_count)
