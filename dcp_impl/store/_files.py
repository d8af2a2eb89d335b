"""The one door to a local checkpoint file: regular files inside the checkpoint, bounded reads,
and storage faults (no space, too many open files, permission denied) as typed errors.

Every local read of a checkpoint file (data files, metadata, sidecar, index, safetensors
headers; by the readers, ``consolidate`` and the command line) opens it with
:func:`open_regular` and reads small files with :func:`read_at_most`, so a link out of the
checkpoint, a FIFO, a device or a file longer than its declared size is refused by one rule
(docs/security.md, "Files are what they claim to be").
"""

from __future__ import annotations

import errno
import os
import stat

from dcp_impl.errors import StorageFaultError, UnsafeFileError

__all__ = ["open_regular", "read_at_most", "storage_fault"]

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

_ADVICE = {
    errno.ENOSPC: "the file system is full: free space or choose another location, then retry",
    errno.EDQUOT: "the disk quota is exhausted: free space or raise the quota, then retry",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or use fewer threads",
    errno.ENFILE: "the system's open-file table is full: close files elsewhere, then retry",
    errno.EACCES: "permission denied: check the permissions of the file and its folder",
    errno.EPERM: "operation not permitted: check the permissions of the file and its folder",
    errno.EROFS: "the file system is read-only: choose a writable location",
}


def storage_fault(err: OSError, path: str, doing: str) -> OSError:
    """``err`` as a :class:`StorageFaultError` naming ``path`` and what to do, for the
    faults a user can fix (no space, open-file limits, permissions); else ``err`` itself.

    Use as ``raise storage_fault(err, path, "writing") from err``.
    """
    advice = _ADVICE.get(err.errno or 0)
    if advice is None or isinstance(err, StorageFaultError):
        return err
    fault = StorageFaultError(f"{path}: {doing} failed ({os.strerror(err.errno or 0)}): {advice}")
    fault.errno = err.errno
    return fault


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return f"special file (mode {mode:o})"


def open_regular(path: str, *, root: str | os.PathLike[str] | None = None) -> int:
    """Open ``path`` for reading and return its descriptor; only a regular file is opened.

    With ``root`` (the checkpoint's folder), ``path`` must resolve to a file inside it:
    links that stay inside the checkpoint are followed, a link out of it (to
    ``/etc/passwd``, ``/dev/zero``, another folder) raises :class:`UnsafeFileError` before
    anything is opened. The resolved path is then opened with ``O_NOFOLLOW`` (a link swapped
    in since is refused, never followed) and ``O_NONBLOCK`` (a FIFO cannot block the open),
    and anything but a regular file is refused. A missing file raises ``FileNotFoundError``
    (also where a parent is a file); no space, open-file limits and permissions raise
    :class:`StorageFaultError`.
    """
    target = path
    if root is not None:
        real_root = os.path.realpath(root)
        target = os.path.realpath(path)
        if target == real_root or os.path.commonpath([real_root, target]) != real_root:
            raise UnsafeFileError(
                f"{path}: expected a file inside the checkpoint {os.fspath(root)}, "
                f"found a link to {target}"
            )
    try:
        fd = os.open(target, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except NotADirectoryError as err:  # a parent is a file: the file is not there
        raise FileNotFoundError(err.errno, err.strerror, path) from err
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnsafeFileError(
                f"{path}: expected a regular file, found a symbolic link"
            ) from err
        raise storage_fault(err, path, "opening") from err
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFileError(f"{path}: expected a regular file, found a {_kind(mode)}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_at_most(fd: int, limit: int) -> bytes:
    """The bytes of the open file ``fd`` from its start, at most ``limit`` of them.

    Reads until end of file or ``limit`` bytes, whatever ``stat`` says: a caller that
    passes its declared size plus one detects a longer file by the extra byte, and a file
    that never ends (or lies about its size) costs at most ``limit`` bytes of memory.
    """
    pieces: list[bytes] = []
    done = 0
    while done < limit:
        piece = os.pread(fd, min(limit - done, 1 << 24), done)
        if not piece:
            break
        pieces.append(piece)
        done += len(piece)
    return b"".join(pieces)
