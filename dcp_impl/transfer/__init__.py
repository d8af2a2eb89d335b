"""The read pipeline and the byte-level I/O of dcp_impl's backends: bytes <-> tensors.

Nothing here knows a checkpoint format; a backend maps its metadata onto these pieces:

* :func:`read_items` is a ``StorageReader.read_data``: it turns a LoadPlan's ReadItems into
  one :class:`ReadRequest` per stored item (found by the backend's :data:`Locate`, as a
  :class:`StoredItem`), has them read by the store, then commits each destination to the
  planner in plan order, bytes entries only if they load under ``torch.load(weights_only=True)``
  rules (:func:`checked_bytes`, the default). Both of dcp_impl's readers are this function plus
  a ``Locate``.
* :func:`read_into` executes :class:`ReadRequest` s. A request names one stored item (a
  row-major chunk at a byte range of a file) and the :class:`Target` s to fill from it: a
  sub-box of the chunk and a destination tensor of the sub-box's sizes. Each target is filled
  by one of five strategies (:mod:`dcp_impl.transfer.strategy`; described once, in
  docs/architecture.md, "How bytes reach a destination"). With ``coalesce`` (object stores),
  neighbouring items are fetched by one read and served from a staging buffer. With
  ``max_inflight_bytes``, every buffer a read allocates is taken from one budget under that
  cap (waiting in turn), source reads and coalesced spans are cut to each thread's share, and
  files are read instead of mapped: the reads hold at most the cap plus one buffer beyond the
  targets.
* A :class:`Source` is one open stored file that :func:`read_into` asks for byte ranges;
  an :data:`Opener` (a store's ``opener``) makes one from a path. :class:`Mappable` sources
  can also be viewed in place, :class:`DeviceReadable` ones fill device memory themselves.
  The sources themselves live with their places, in :mod:`dcp_impl.store` (``LocalFile``,
  ``ObjectSource``). A reading thread keeps at most ``MAX_OPEN_FILES`` sources open,
  closing the least recently used.
* :class:`ItemWriter` is what a store's ``create`` returns: it appends the logical values of
  tensors (any device, any strides: :func:`tensor_bytes`) or raw bytes to one new stored
  file and returns a :class:`StoredRange` per item: its byte offset, length and checksum,
  hashed on a thread of the process's hashing pool while the bytes are written.
* Shared reads (``share_reads="shm"`` on the readers): :func:`mark_host` tags a rank's local
  plan with its :class:`HostTag`; :func:`share_plans`, on the coordinator, gives each stored
  item several ranks of one host need an owner (a :class:`SharePlan` per rank, in the plan's
  ``storage_data``); ``dcp_impl.store.SharedReader`` (the host's shared memory is a place)
  wraps the store in ``read_items``.

Nothing here knows where a file lives: that is a :class:`dcp_impl.store.Store`, which imports
only this package's public names. Backends make directories, write data files, commit, list
and remove files only through a store, and read through ``Store.read`` (``read_into`` with the
store's opener and coalescing). The name: ``io`` shadowed the standard library's module
(``dcp_impl.io`` stays one release as a deprecated alias).

Checksums have one ``xxh3_64`` digest per piece of an item (:func:`piece_checksum`,
:class:`Checksums`: ``"xxh3_64@<piece size>:<16 hex digits per piece>"``, pieces of at most
1 MiB cutting the item into a power of two (:func:`piece_size_for`), or ``"xxh3_64:<16 hex
digits>"`` for an item of one piece, which is also what version-2 checkpoints hold for every
item). With ``verify=True``, :func:`read_into` never lets a byte of an item reach a destination
before the piece holding it passed its check (how: docs/architecture.md, as above). A mismatch,
a short file or a missing file raises ``CorruptCheckpointError`` naming the file and the
item; when ``read_into`` raises, the destinations' contents are unspecified.
"""

from dcp_impl.transfer._budget import MIN_INFLIGHT_BYTES, check_max_inflight
from dcp_impl.transfer._checksum import (
    CHECKSUM_ALGORITHM,
    CHECKSUM_TEXT,
    MAX_PIECE_SIZE,
    MIN_PIECE_SIZE,
    PIECE_SIZE,
    Checksums,
    Digest,
    checksum,
    piece_checksum,
    piece_size_for,
)
from dcp_impl.transfer._load import (
    BytesSink,
    Locate,
    RequestReader,
    StoredItem,
    Verify,
    checked_bytes,
    load_bytes,
    read_items,
)
from dcp_impl.transfer._read import read_into
from dcp_impl.transfer._requests import ReadRequest, Target
from dcp_impl.transfer._share_plan import (
    DEFAULT_SHARE_TIMEOUT,
    SHM_ROOT,
    HostTag,
    SharePlan,
    ShareReads,
    check_share_reads,
    mark_host,
    share_plans,
)
from dcp_impl.transfer._sources import DeviceReadable, Mappable, Opener, Source
from dcp_impl.transfer._write import ItemWriter, StoredRange, tensor_bytes

__all__ = [
    "read_items",
    "StoredItem",
    "Locate",
    "RequestReader",
    "BytesSink",
    "checked_bytes",
    "load_bytes",
    "Verify",
    "CHECKSUM_ALGORITHM",
    "CHECKSUM_TEXT",
    "PIECE_SIZE",
    "MIN_PIECE_SIZE",
    "MAX_PIECE_SIZE",
    "Checksums",
    "Digest",
    "checksum",
    "piece_checksum",
    "piece_size_for",
    "StoredRange",
    "ItemWriter",
    "tensor_bytes",
    "Target",
    "ReadRequest",
    "read_into",
    "MIN_INFLIGHT_BYTES",
    "check_max_inflight",
    "Source",
    "Mappable",
    "DeviceReadable",
    "Opener",
    "ShareReads",
    "SHM_ROOT",
    "DEFAULT_SHARE_TIMEOUT",
    "HostTag",
    "SharePlan",
    "check_share_reads",
    "mark_host",
    "share_plans",
]
