"""Reading stored items (row-major chunks at byte ranges of files) into destination tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dcp_impl import _tuning, dtypes
from dcp_impl._pool import parallel_map
from dcp_impl._tuning import Tuning
from dcp_impl.layout import byte_span
from dcp_impl.transfer import _runs, _verified
from dcp_impl.transfer._budget import (
    Budget,
    Scratch,
    check_max_inflight,
    plan_threads,
    sliced_preadv,
)
from dcp_impl.transfer._requests import (
    ReadRequest,
    Target,
    bytes_at,
    coalesced,
    is_direct,
    live,
    sub_view,
    truncated,
)
from dcp_impl.transfer._sources import (
    MAX_OPEN_FILES,
    DeviceReadable,
    Mappable,
    Opener,
    OpenFiles,
    Source,
)
from dcp_impl.transfer._staging import CudaCopier, DeviceCopier, Staging, SyncCopier
from dcp_impl.transfer._write import byte_view
from dcp_impl.transfer.strategy import Lazy, LazyProbe, Strategy, choose

__all__ = ["read_into", "MAX_OPEN_FILES"]

_BAND = 4 << 20
"""A verified sub-box read from a mapped file checks and copies blocks of about this many
bytes: each block's pieces are hashed, then copied out while they are still in cache."""
_STAGED_BAND = 16 << 20
"""The same where the file cannot be mapped: the staging buffer holds a block's pieces."""


def read_into(
    requests: Sequence[ReadRequest],
    *,
    thread_count: int = 1,
    verify: bool = True,
    opener: Opener,
    coalesce: int = 0,
    max_inflight_bytes: int | None = None,
) -> None:
    """Fill every target of every request; return once all bytes are in place.

    Requests are read sorted by file and offset, each thread opening a file at most once.
    Device copies are complete when this returns.

    Args:
        requests: the stored items to read and the targets each fills.
        thread_count: parallel reading threads.
        verify: check the checksum of each piece of an item before any of its bytes is
            used: only the pieces a read touches (see the package's docstring for what is
            read then).
        opener: opens a request's path as a :class:`Source` (a store's ``opener``).
        coalesce: neighbouring requests of one file whose bytes (and the gaps between them)
            span at most this many bytes are fetched by one read into a staging buffer and
            served from it; for stores where each read is a round trip (object stores).
        max_inflight_bytes: a cap on the host memory the reads hold beyond the targets
            (staging buffers, coalesced spans, scratch, the copies a source makes of what it
            reads): reads wait for memory in turn, files are read instead of mapped, and
            coalesced spans and source reads are cut to fit. Held bytes stay within the cap,
            or one buffer larger than the cap held alone. None: no cap.
    """
    check_max_inflight("read_into", max_inflight_bytes)
    budget = part = None
    if max_inflight_bytes is not None:
        budget = Budget(max_inflight_bytes)
        thread_count, part = plan_threads(max_inflight_bytes, thread_count)
        coalesce = min(coalesce, part)
    ordered = sorted(requests, key=lambda r: (r.path, r.offset))
    batches = coalesced(ordered, coalesce)
    pin = torch.cuda.is_available() and any(
        t.dest.device.type == "cuda" for r in ordered for t in r.targets
    )

    tuning = _tuning.current()

    def make_worker() -> _Reader:
        return _Reader(
            verify=verify, pin=pin, opener=opener, tuning=tuning, budget=budget, part=part
        )

    # Each thread's share for the copy its source may make of one read (of ``part`` bytes).
    with Budget.reserving(budget, min(thread_count, len(batches)) * (part or 0)):
        parallel_map(batches, make_worker, thread_count=thread_count)


class _Reader:
    """One reading thread's state: open files, staging and scratch buffers, device copiers."""

    def __init__(
        self,
        *,
        verify: bool,
        pin: bool,
        opener: Opener,
        tuning: Tuning,
        budget: Budget | None = None,
        part: int | None = None,
    ) -> None:
        self._verify = verify
        self._tuning = tuning
        self._stage_all = tuning.stage_all
        self._files = OpenFiles(opener)
        self._budget = budget
        self._part = part
        self._staging = Staging(pin, budget, self._drop_idle)
        self._scratch = Scratch(budget, self._drop_idle)
        self._injected: DeviceCopier | None = tuning.copier() if tuning.copier else None
        self._copiers: dict[torch.device, DeviceCopier] = {}

    def __call__(self, batch: list[ReadRequest]) -> None:
        if len(batch) > 1:
            self._read_batch(batch)
        else:
            self._read(batch[0])

    def _read_batch(self, batch: list[ReadRequest]) -> None:
        """Fetch the span of all of ``batch`` by one read, then serve each request from it."""
        start = batch[0].offset
        end = max(r.offset + r.length for r in batch)
        slot, staged = self._staging.take(end - start)
        whole = byte_view(staged)
        done = self._preadv(self._open(batch[0]), [whole], start)
        for request in batch:
            if request.offset + request.length > start + done:
                raise truncated(request, request.offset + request.length, start + done)
        for request in batch:
            begin = request.offset - start
            self._serve(request, live(request), bytes_at(whole, begin, request.length), slot)

    def _read(self, request: ReadRequest) -> None:
        targets = live(request)
        if not targets:
            return
        if self._verify and request.checksum is not None:
            self._read_verified(request, targets)
        else:
            self._read_spans(request, targets)

    def _read_verified(self, request: ReadRequest, targets: list[Target]) -> None:
        """Hand out the item's bytes, each only after the piece holding it passed its check:
        straight into a direct destination of one exact byte span as it lands, else block
        by block (only the pieces the targets touch are read and hashed)."""
        first = targets[0]
        if len(targets) == 1 and self._is_direct(request, first):
            itemsize = dtypes.by_torch(request.dtype).itemsize
            start, length, exact = byte_span(request.chunk_sizes, first.sub, itemsize)
            whole = length == request.length
            if exact and (whole or self._spans_pieces(request)):
                self._pread_checked(request, byte_view(first.dest), start)
                return
        mapped = self._mapped(request, targets)
        if mapped is not None:
            self._copy_checked_in_place(request, targets, mapped)
        else:
            self._copy_checked_staged(request, targets)

    def _spans_pieces(self, request: ReadRequest) -> bool:
        """Whether a span of the item is best read piece by piece: its pieces are small (not
        one whole-item checksum of more than a hashing step) and reads are cheap (local,
        mappable files).

        A short item of one piece is read whole into scratch too, where the span cuts it:
        checking it in the mapped file instead faults its pages in one by one, which took
        longer than reading it (perf/README.md, "Measurements behind dcp_impl's I/O
        constants")."""
        pieces = request.pieces
        assert pieces is not None
        small = pieces.piece_size is not None or request.length <= _verified.HASH_STEP
        return small and isinstance(self._open(request), Mappable)

    def _copy_checked_in_place(
        self, request: ReadRequest, targets: list[Target], item: torch.Tensor
    ) -> None:
        """Copy the targets out of ``item`` (the mapped file's bytes), checking each piece in
        place once, just before the first block that needs it is copied."""
        pieces = request.pieces
        assert pieces is not None  # only requests with a checksum are read verified
        itemsize = dtypes.by_torch(request.dtype).itemsize
        view = byte_view(item)
        checked: set[int] = set()
        for target in targets:
            for block in _verified.blocks(request.chunk_sizes, target.sub, itemsize, _BAND):
                start, length, _ = byte_span(request.chunk_sizes, block, itemsize)
                for k in pieces.touching(start, start + length):
                    if k not in checked:
                        begin, stop = pieces.span(k)
                        _verified.check_piece(request, pieces, k, view[begin:stop])
                        checked.add(k)
                dest = _verified.dest_block(target.dest, target.sub, block)
                source = sub_view(request, item, Target(block, dest), start=start)
                dtypes.copy_bits(dest, source)

    def _copy_checked_staged(self, request: ReadRequest, targets: list[Target]) -> None:
        """Read the pieces each block touches into a staging buffer, check them, and copy
        the block out of it: at most about one band plus two pieces in memory at a time."""
        pieces = request.pieces
        assert pieces is not None  # only requests with a checksum are read verified
        itemsize = dtypes.by_torch(request.dtype).itemsize
        for target in targets:
            for block in _verified.blocks(request.chunk_sizes, target.sub, itemsize, _STAGED_BAND):
                start, length, _ = byte_span(request.chunk_sizes, block, itemsize)
                touched = pieces.touching(start, start + length)
                base = pieces.span(touched[0])[0]
                base -= base % itemsize  # the staged bytes are viewed as the item's dtype
                end = pieces.span(touched[-1])[1]
                end += -end % itemsize
                slot, staged = self._staging.take(end - base)
                window = byte_view(staged)
                self._pread(request, [window], request.offset + base)
                for k in touched:
                    begin, stop = pieces.span(k)
                    _verified.check_piece(request, pieces, k, window[begin - base : stop - base])
                dest = _verified.dest_block(target.dest, target.sub, block)
                source = sub_view(request, staged, Target(block, dest), base=base, start=start)
                self._copy_out(slot, Target(block, dest), source)

    def _serve(
        self, request: ReadRequest, targets: list[Target], item: torch.Tensor, slot: int | None
    ) -> None:
        """Check the item's bytes ``item`` (with ``verify``), then copy the targets out of it:
        directly, or as copies that read the staging buffer of ``slot``."""
        if self._verify and request.pieces is not None:
            _verified.check_all(request, byte_view(item))
        for target in targets:
            source = sub_view(request, item, target)
            if slot is None:
                dtypes.copy_bits(target.dest, source)
            else:
                self._copy_out(slot, target, source)

    def _read_spans(self, request: ReadRequest, targets: list[Target]) -> None:
        """Read only the bytes the targets need, each the way :func:`choose` says."""
        itemsize = dtypes.by_torch(request.dtype).itemsize
        pieces: list[_runs.Piece] = []
        for target in targets:
            start, length, exact = byte_span(request.chunk_sizes, target.sub, itemsize)
            probe = self._probe(request, target, itemsize)
            direct = self._is_direct(request, target)
            match choose(direct=direct, exact=exact, min_run=self._tuning.min_run, probe=probe):
                case Strategy.SPAN:
                    pieces.append((request.offset + start, byte_view(target.dest)))
                case Strategy.DEVICE:
                    device = probe.device.get()
                    assert device is not None  # choose() asked
                    done = device.read_to_device(target.dest, request.offset + start)
                    if done < length:
                        end = request.offset + start
                        raise truncated(request, end + length, end + done)
                case Strategy.MAPPED:
                    mapped = probe.mapping.get()
                    assert mapped is not None  # choose() asked
                    dtypes.copy_bits(target.dest, sub_view(request, mapped, target, start=start))
                case Strategy.RUNS:
                    pieces += probe.runs.get().pieces(byte_view(target.dest), request.offset)
                case Strategy.STAGED:
                    self._read_staged(request, target, start, length)
        if pieces:
            self._read_pieces(request, sorted(pieces, key=lambda piece: piece[0]))

    def _probe(self, request: ReadRequest, target: Target, itemsize: int) -> LazyProbe:
        # Several runs: a mapped file gives exactly their bytes, where vectored reads would
        # also take the gaps between them (measured: perf/README.md).
        return LazyProbe(
            device=Lazy(lambda: self._device_readable(request, target)),
            mapping=Lazy(lambda: self._mapped(request, [target])),
            runs=Lazy(lambda: _runs.plan_runs(request.chunk_sizes, target.sub, itemsize)),
        )

    def _read_staged(self, request: ReadRequest, target: Target, start: int, length: int) -> None:
        """Read the sub-box's enclosing span (``length`` bytes from chunk byte ``start``)
        into a staging buffer and copy the sub-box out."""
        slot, staged = self._staging.take(length)
        self._pread(request, [byte_view(staged)], request.offset + start)
        view = sub_view(request, staged, target, base=start, start=start)
        self._copy_out(slot, target, view)

    def _read_pieces(self, request: ReadRequest, pieces: list[_runs.Piece]) -> None:
        """Fill the sorted ``pieces``; bytes between them that fit ``max_gap`` go to scratch."""
        gap = min(_runs.largest_gap(pieces), self._tuning.max_gap)
        scratch = self._scratch.of(gap)
        for offset, buffers in _runs.vectored(pieces, scratch, self._tuning.iov_max):
            self._pread(request, buffers, offset)

    def _is_direct(self, request: ReadRequest, target: Target) -> bool:
        # A destination of another dtype takes a converting copy_, never raw bytes.
        dest = target.dest
        return (
            not self._stage_all
            and dest.device.type == "cpu"
            and dest.dtype == request.dtype
            and is_direct(dest)
        )

    def _device_readable(self, request: ReadRequest, target: Target) -> DeviceReadable | None:
        """The request's source, where it fills ``target.dest`` in device memory itself."""
        dest = target.dest
        if self._stage_all or dest.device.type == "cpu" or dest.dtype != request.dtype:
            return None
        source = self._open(request)
        return source if isinstance(source, DeviceReadable) and is_direct(dest) else None

    def _copy_out(self, slot: int, target: Target, source: torch.Tensor) -> None:
        """Copy ``source``, a view of the staging buffer of ``slot``, into ``target.dest``."""
        copier = self._copier_for(target.dest)
        self._staging.used_by(slot, copier, copier.copy(target.dest, source))

    def _mapped(self, request: ReadRequest, targets: list[Target]) -> torch.Tensor | None:
        """The item's bytes in place in the mapped file, when its source maps and every
        target is in host memory (device copies go through pinned staging instead)."""
        if self._stage_all or any(t.dest.device.type != "cpu" for t in targets):
            return None
        if self._budget is not None:  # mapped pages stay resident until unmapped: uncapped
            return None
        whole = self._files.mapped(request.path, request.label)
        if whole is None:
            return None
        end = request.offset + request.length
        if len(whole) < end:
            raise truncated(request, end, len(whole))
        return bytes_at(whole, request.offset, request.length)

    def _copier_for(self, dest: torch.Tensor) -> DeviceCopier:
        if self._injected is not None:
            return self._injected
        device = dest.device
        if device not in self._copiers:
            cuda = device.type == "cuda"
            self._copiers[device] = CudaCopier(device) if cuda else SyncCopier()
        return self._copiers[device]

    def _pread(self, request: ReadRequest, buffers: list[memoryview], offset: int) -> None:
        """Fill ``buffers`` from ``offset`` of the request's file, or report the truncation."""
        total = sum(len(b) for b in buffers)
        done = self._preadv(self._open(request), buffers, offset)
        if done < total:
            raise truncated(request, offset + total, offset + done)

    def _preadv(self, source: Source, buffers: list[memoryview], offset: int) -> int:
        """``source.preadv``; under a cap, a source that may copy what it reads (all but
        local files, which read straight into the buffers) is asked for at most ``part``
        bytes a call: the thread's reserved share."""
        if self._part is None or isinstance(source, Mappable):
            return source.preadv(buffers, offset)
        return sliced_preadv(source, buffers, offset, self._part)

    def _drop_idle(self) -> None:
        """Free the buffers this thread holds idle, before it waits for the budget."""
        self._staging.drop()
        self._scratch.drop()

    def _open(self, request: ReadRequest) -> Source:
        return self._files.open(request.path, request.label)

    def _pread_checked(self, request: ReadRequest, view: memoryview, start: int = 0) -> None:
        """Read the item's bytes ``[start, start + len(view))`` into ``view``, checking every
        piece they touch as it lands (:func:`_verified.pread_checked`)."""
        # Only where reads are cheap (local, mappable files): elsewhere each read is a round trip.
        if not isinstance(self._open(request), Mappable):
            self._pread(request, [view], request.offset)  # the whole item (_read_verified)
            _verified.check_all(request, view)
            return
        _verified.pread_checked(
            request,
            view,
            start,
            lambda buffer, at: self._pread(request, [buffer], at),
            self._scratch.of,
        )

    def close(self) -> None:
        try:
            self._staging.drop()
            self._scratch.drop()
            copiers = list(self._copiers.values())
            if self._injected is not None:
                copiers.append(self._injected)
            for copier in copiers:
                copier.synchronize()
        finally:
            self._files.close()
