"""Where a checkpoint's files live: the public storage seam of dcp_impl's backends.

Both backends (:class:`~dcp_impl.FileSystemWriter`/``Reader``,
:class:`~dcp_impl.HuggingFaceWriter`/``Reader``) and :func:`~dcp_impl.consolidate` do every
file operation through a :class:`Store` and accept one wherever they take a path or URL::

    store = MyStore("myfs://bucket/run-7/step-1000")
    dcp.save(state_dict, storage_writer=dcp_impl.FileSystemWriter(store))

* :class:`Store`: the abstract base class; subclasses implement a few primitives (ranged
  reads, create, atomic commit, rename, remove, list) and inherit working defaults for the
  rest (read threads, coalescing, the opener of read sources).
* :class:`LocalStore`: a local directory (``os`` calls, fsync, atomic rename, mapped reads).
* :class:`FsspecStore`: a prefix of an fsspec file system (``s3://bucket/prefix``).
* :func:`register_store`: open ``PROTOCOL://...`` ids with a factory of yours, consulted
  before fsspec; :func:`open_store` is what the backends call on a path or URL.
* :func:`is_url`, :func:`is_checkpoint_id`: which ids :func:`open_store` accepts.
* :func:`commit_lock`: one save at a time runs its commit step on a location;
  :func:`save_stamp` / :func:`stamp_of` / :func:`older_save`: save ids that sort by
  start time.
* Every place's own pieces: local files (:class:`LocalFile`, a source read with ``preadv`` or
  mapped; :class:`DataFileWriter`, the local ``ItemWriter``; :func:`atomic_write` and
  :func:`fsync_dir`, the atomic commit; :func:`open_regular`, the one door to a local
  checkpoint file, :func:`read_at_most`, :func:`storage_fault`), object stores
  (:class:`ObjectSource`, :class:`ObjectWriter`), and the host's shared memory
  (:class:`SharedReader`, the shared reads of ``share_reads="shm"``).

Everything that moves bytes without knowing where they live (``ItemWriter``, the source
protocols, ``read_into``, ``read_items``, checksums) is :mod:`dcp_impl.transfer`, of which
this package uses only the public names.

``dcp_impl.testing.StoreTests`` is the contract test kit for a new store.
docs/object-stores.md describes the stores; docs/architecture.md where they sit.
"""

from typing import Any

from dcp_impl.store._base import Store
from dcp_impl.store._disk import DataFileWriter, LocalFile, atomic_write, fsync_dir
from dcp_impl.store._files import open_regular, read_at_most, storage_fault
from dcp_impl.store._fsspec import FsspecStore, ObjectSource, ObjectWriter
from dcp_impl.store._local import LocalStore
from dcp_impl.store._lock import (
    LOCK_NAME,
    HeldLock,
    commit_lock,
    older_save,
    save_stamp,
    stamp_of,
)
from dcp_impl.store._registry import (
    StoreFactory,
    is_checkpoint_id,
    is_local_path,
    is_url,
    open_store,
    register_store,
)
from dcp_impl.store._shared import SharedReader

__all__ = [
    "Store",
    "LocalStore",
    "FsspecStore",
    "StoreFactory",
    "register_store",
    "open_store",
    "is_url",
    "is_local_path",
    "is_checkpoint_id",
    "LocalFile",
    "DataFileWriter",
    "atomic_write",
    "fsync_dir",
    "open_regular",
    "read_at_most",
    "storage_fault",
    "ObjectSource",
    "ObjectWriter",
    "SharedReader",
    "LOCK_NAME",
    "HeldLock",
    "commit_lock",
    "older_save",
    "save_stamp",
    "stamp_of",
]


def __getattr__(name: str) -> Any:
    # ItemWriter and StoredRange were exported here too until they moved: one release of grace.
    if name in ("ItemWriter", "StoredRange"):
        import warnings

        from dcp_impl import transfer

        warnings.warn(
            f"dcp_impl.store.{name} is deprecated: import dcp_impl.transfer.{name} instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(transfer, name)
    raise AttributeError(f"module 'dcp_impl.store' has no attribute {name!r}")
