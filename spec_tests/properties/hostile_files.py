"""Spec section 10: hostile files. A stored file is not what the checkpoint says it is.

After a good save, each file under the (local) checkpoint location is in turn:

* replaced by a symbolic link to a file outside the checkpoint holding the same bytes with
  the saved tensor's bytes inverted: the load raises or returns exactly what was saved,
  never the outside bytes (a reader that follows links out of a checkpoint reads whatever
  file the checkpoint names: ``/etc/passwd``, ``/proc/self/environ``);
* replaced by a FIFO: the load raises or loads, within :data:`HANG_S` seconds (a reader that
  opens it blocks forever, a reader that reads to its end never ends);
* made longer than written (bytes appended): the load raises or returns exactly what was
  saved (readers never read past the declared size, so the extra bytes cannot be loaded);
* and a second save meets a full disk at every point of its commit (a tmpfs of a few MiB,
  filled to :func:`_free_levels`): it raises or succeeds; either way the checkpoint then loads
  as the previous one or the new one, exactly, never a mix and never nothing.

Only files under a local directory can be damaged generically: on URL roots these skip. The
no-space property mounts a tmpfs and skips, naming why, where that is not allowed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from spec_tests.backends import Backend
from spec_tests.contract.verdicts import ContractViolation, may_refuse
from spec_tests.plugin.profiles import few
from spec_tests.properties.checks import (
    Location,
    check_entry,
    claimed,
    draw_tensor,
    request_for,
)
from spec_tests.sim import harness, locations

__all__ = ["APPENDED", "HANG_S", "HostileFilesProperties", "stored_files"]

HANG_S = 20.0
"""A load of a few bytes that has not finished after this long is taken to hang."""
APPENDED = (1, 4096)
"""Bytes appended to a file: one past its declared end, and a page."""
_SHAPE = (4, 3)  # non-empty: every stored data file holds bytes a wrong read would change


def local_root(location: str) -> Path:
    """The checkpoint's directory; skip where the location is a URL (no files to damage)."""
    if locations.is_url(location):
        pytest.skip(f"the location {location} is a URL: only local files can be damaged")
    return Path(location)


def stored_files(root: Path) -> list[Path]:
    """Every regular file under ``root``, in a stable order (links are not followed)."""
    found = []
    for folder, _, names in os.walk(root):
        found += [Path(folder, n) for n in names if Path(folder, n).is_file()]
    return sorted(found)


def _files_or_skip(backend: Backend, root: Path) -> list[Path]:
    files = stored_files(root)
    if not files:
        pytest.skip(f"backend {backend.name!r} stores no files at the location")
    return files


def _raises_or_exact(backend: Backend, location: str, value: torch.Tensor, what: str) -> str:
    """Load ``value`` back: raising is fine, loading anything but ``value`` is a violation.
    Returns what happened, for the caller to ``note`` (notes are for the test's thread)."""
    with may_refuse(f"loading where {what}") as outcome:
        loaded = harness.load(backend, location, [{"t": request_for(value)}])[0]
    if outcome.refused:
        return f"{what}: refused ({outcome.error!r})"
    try:
        check_entry("t", loaded["t"], value)
    except ContractViolation as verdict:
        raise ContractViolation(
            f"{what}: the load returned values other than those saved ({verdict}); expected "
            "it to raise or to return exactly what was saved"
        ) from verdict
    return f"{what}: loaded exactly"


def _fixed_value(backend: Backend) -> torch.Tensor:
    """A tensor of :data:`_SHAPE` with distinct bytes, of float32 if claimed, else of the
    first claimed dtype."""
    dtypes = claimed(backend)
    dtype = torch.float32 if torch.float32 in dtypes else dtypes[0]
    itemsize = torch.empty((), dtype=dtype).element_size()
    count = _SHAPE[0] * _SHAPE[1]
    return torch.arange(count * itemsize, dtype=torch.uint8).view(dtype).reshape(_SHAPE)


def _tensor_bytes(value: torch.Tensor) -> bytes:
    return harness.as_bytes(value).numpy().tobytes()


def _other_bytes(original: bytes, value: torch.Tensor) -> bytes:
    """``original`` with the saved tensor's bytes inverted where they are found (so a reader
    that follows the link loads different values of the same size), else all inverted."""
    data = _tensor_bytes(value)
    start = original.find(data) if data else -1
    if start < 0:
        return bytes(b ^ 0xFF for b in original)
    flipped = bytes(b ^ 0xFF for b in data)
    return original[:start] + flipped + original[start + len(data) :]


_IN_OPEN = 0x20  # inotify: the watched file was opened


@contextlib.contextmanager
def _opens_of(path: Path) -> Iterator[Callable[[], bool]]:
    """Watch ``path`` (Linux inotify); yields a callable telling whether it was opened since.
    Where inotify is unavailable it always answers False (the content check still holds)."""
    libc = ctypes.CDLL(None, use_errno=True)
    init = getattr(libc, "inotify_init1", None)
    fd = init(os.O_NONBLOCK | os.O_CLOEXEC) if init is not None else -1
    if fd < 0 or libc.inotify_add_watch(fd, os.fsencode(path), _IN_OPEN) < 0:
        if fd >= 0:
            os.close(fd)
        yield lambda: False
        return

    def opened() -> bool:
        try:
            return bool(os.read(fd, 4096))
        except BlockingIOError:
            return False

    try:
        yield opened
    finally:
        os.close(fd)


@contextlib.contextmanager
def _swapped(path: Path, make: Callable[[Path], None]) -> Iterator[None]:
    """``path`` replaced by what ``make(path)`` creates, then restored."""
    saved = path.with_name(path.name + ".hostile-original")
    os.rename(path, saved)
    try:
        make(path)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.rename(saved, path)


# The watchdog is a process, not a thread: a reader blocked opening a FIFO may hold the GIL
# (safetensors' Rust open does), freezing every thread of the test's process. After the
# deadline it marks the hang and keeps opening the FIFO for writing and closing it, which
# releases a reader blocked opening it (it then reads end of file).
_WATCHDOG = """
import os, sys, time
fifo, seconds, marker = sys.argv[1], float(sys.argv[2]), sys.argv[3]
time.sleep(seconds)
open(marker, "w").close()
while True:
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass
    time.sleep(0.05)
"""


@contextlib.contextmanager
def _finishes_within(seconds: float, fifo: Path, what: str) -> Iterator[None]:
    """A ContractViolation if the block was still running ``seconds`` after it started
    (a watchdog process then released it from the FIFO, so no hang outlives the test)."""
    with tempfile.TemporaryDirectory(prefix="dcp-watchdog-") as folder:
        marker = Path(folder, "hung")
        command = [sys.executable, "-c", _WATCHDOG, str(fifo), str(seconds), str(marker)]
        watchdog = subprocess.Popen(command)
        try:
            yield
        finally:
            watchdog.kill()
            watchdog.wait()
            hung = marker.exists()
        if hung:
            raise ContractViolation(
                f"{what}: the load did not finish within {seconds:.0f} s (it blocks on the "
                "FIFO); expected it to refuse a file that is not a regular file, or to load "
                "without it"
            )


class HostileFilesProperties:
    """Files that are links out of the checkpoint, special files, or longer than declared."""

    @few(3)
    @given(data=st.data())
    def test_link_out_of_checkpoint_never_read(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Each file replaced by a link to an outside file of other bytes of the same length:
        the load raises or returns the saved values, never the outside file's."""
        value = draw_tensor(data, dcp_backend, shape=_SHAPE)
        location = dcp_location()
        root = local_root(location)
        with (
            harness.repro(dcp_backend, dtype=value.dtype, shape=_SHAPE),
            tempfile.TemporaryDirectory(prefix="dcp-outside-") as outside,
        ):
            harness.save(dcp_backend, location, [{"t": value}])
            for path in _files_or_skip(dcp_backend, root):
                target = Path(outside, path.name)
                target.write_bytes(_other_bytes(path.read_bytes(), value))
                what = f"{path.relative_to(root)} is a link to {target}, outside the checkpoint"
                with (
                    _swapped(path, lambda p, t=target: p.symlink_to(t)),  # type: ignore[misc]
                    _opens_of(target) as opened,
                ):
                    note(_raises_or_exact(dcp_backend, location, value, what))
                    if opened():
                        raise ContractViolation(
                            f"{what}: the load opened {target.name} through the link; expected "
                            "a reader never to follow a link out of the checkpoint"
                        )

    def test_special_file_never_hangs(self, dcp_backend: Backend, dcp_location: Location) -> None:
        """Each file replaced by a FIFO nobody writes: the load raises or loads the saved
        values, and finishes within :data:`HANG_S` seconds. (Not drawn: the values play no
        part, and every example of a hang costs :data:`HANG_S` to run and to shrink.)"""
        value = _fixed_value(dcp_backend)
        location = dcp_location()
        root = local_root(location)
        with harness.repro(dcp_backend, dtype=value.dtype, shape=_SHAPE):
            harness.save(dcp_backend, location, [{"t": value}])
            for path in _files_or_skip(dcp_backend, root):
                what = f"{path.relative_to(root)} is a FIFO"
                with _swapped(path, os.mkfifo), _finishes_within(HANG_S, path, what):
                    _raises_or_exact(dcp_backend, location, value, what)

    @few(3)
    @given(data=st.data())
    def test_longer_file_never_read_past_its_end(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Each file with bytes appended (one, then a page): the load raises or returns the
        saved values exactly."""
        value = draw_tensor(data, dcp_backend, shape=_SHAPE)
        location = dcp_location()
        root = local_root(location)
        with harness.repro(dcp_backend, dtype=value.dtype, shape=_SHAPE):
            harness.save(dcp_backend, location, [{"t": value}])
            for path in _files_or_skip(dcp_backend, root):
                size = path.stat().st_size
                for extra in APPENDED:
                    what = f"{path.relative_to(root)} has {extra} bytes more than were written"
                    try:
                        with path.open("ab") as f:
                            f.write(b"\xa5" * extra)
                        note(_raises_or_exact(dcp_backend, location, value, what))
                    finally:
                        os.truncate(path, size)

    @pytest.mark.dcp_requires("atomic-commit")
    def test_full_disk_at_commit(self, dcp_backend: Backend, dcp_location: Location) -> None:
        """A second save with the disk full at each point of its writes and commit: it raises
        or succeeds, and then the location loads as the previous checkpoint or the new one,
        exactly."""
        root = local_root(dcp_location())
        old = {"old": torch.arange(64, dtype=torch.float32)}
        new = {f"new{i}": torch.full((256,), float(i)) for i in range(48)}
        with _tmpfs(root / "disk", 16 << 20) as disk:
            (disk / "probe").mkdir()  # locations exist before a save, as dcp_location's do
            need = _bytes_used(disk, lambda: harness.save(dcp_backend, str(disk / "probe"), [new]))
            shutil.rmtree(disk / "probe")
            for i, free in enumerate(_free_levels(need)):
                location = str(disk / f"ckpt-{i}")
                os.mkdir(location)
                with harness.repro(dcp_backend, free_bytes=free, needed_bytes=need):
                    harness.save(dcp_backend, location, [old])
                    with (
                        _filled(disk, free),
                        may_refuse(f"saving with {free} bytes free") as saving,
                    ):
                        harness.save(dcp_backend, location, [new])
                    _old_or_new(dcp_backend, location, old, new, saving.refused, free)
                    shutil.rmtree(location)


def _old_or_new(
    backend: Backend,
    location: str,
    old: dict[str, torch.Tensor],
    new: dict[str, torch.Tensor],
    refused: bool,
    free: int,
) -> None:
    """The location loads as ``new`` (if the save succeeded, only as it) or as ``old``:
    the checkpoint its metadata lists must load exactly."""
    what = f"a save over a checkpoint {'failed' if refused else 'succeeded'} with {free} bytes free"
    reader = backend.make_reader(location)
    with may_refuse(f"reading the metadata where {what}") as reading:
        harness.call("reset", reader.reset, location)
        metadata = harness.call("read_metadata", reader.read_metadata)
    listed = set() if reading.refused else set(getattr(metadata, "state_dict_metadata", {}))
    candidates = [("new", new)] if not refused else [("new", new), ("old", old)]
    for name, state in candidates:
        if set(state) <= listed:
            requests = {k: request_for(v) for k, v in state.items()}
            loaded = harness.load(backend, location, [requests])[0]
            for fqn, value in state.items():
                try:
                    check_entry(fqn, loaded[fqn], value)
                except ContractViolation as verdict:
                    verdict.add_note(f"(where {what}, loading the {name} checkpoint)")
                    raise
            return
    expected = "the new checkpoint" if not refused else "the previous checkpoint or the new one"
    found = (
        f"reading its metadata raised {reading.error!r}"
        if reading.refused
        else (f"metadata listing {sorted(listed)[:6]}")
    )
    raise ContractViolation(f"{what}; expected the location to hold {expected}, found {found}")


@contextlib.contextmanager
def _tmpfs(mountpoint: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes at ``mountpoint``; skip, naming why, where none can be made."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"a full disk needs a small tmpfs: cannot run mount ({err})")
    if done.returncode != 0:
        why = done.stderr.strip() or f"exit status {done.returncode}"
        pytest.skip(f"a full disk needs a small tmpfs (root or CAP_SYS_ADMIN): mount said {why}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


def _free(disk: Path) -> int:
    stats = os.statvfs(disk)
    return stats.f_bavail * stats.f_frsize


def _bytes_used(disk: Path, action: Callable[[], Any]) -> int:
    before = _free(disk)
    action()
    return before - _free(disk)


def _free_levels(need: int) -> list[int]:
    """Free-space levels from none to all a save needs, a page apart near the end (the commit
    writes last: its metadata is the last few pages), sparser before."""
    page = 4096
    levels = set(range(0, need + 2 * page, max(page, need // 8)))
    levels |= set(range(max(0, need - 6 * page), need + 2 * page, page))
    return sorted(levels)


@contextlib.contextmanager
def _filled(disk: Path, free: int) -> Iterator[None]:
    """Fill ``disk`` until only ``free`` bytes are left, for the duration of the block."""
    filler = disk / "filler"
    room = (_free(disk) - free) // 4096 * 4096  # tmpfs counts whole pages
    with filler.open("wb") as f:
        chunk = b"\0" * (1 << 20)
        while room > 0:
            written = f.write(chunk[: min(room, len(chunk))])
            room -= written
    try:
        yield
    finally:
        filler.unlink()
