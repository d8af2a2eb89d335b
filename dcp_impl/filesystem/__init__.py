"""A directory of raw data files plus one JSON metadata file: dcp_impl's filesystem backend.

Layout (specified in ``docs/format.md``, section "Filesystem checkpoint layout"):

* ``data-<file id>-r<rank>-<k>.bin``: the row-major bytes of stored items, back to back.
  Every save of every rank draws a fresh file id, so a save never writes into files of a
  committed one.
* ``.metadata.json``: the checkpoint ``Metadata`` in dcp_impl's JSON format, whose
  ``storage_data`` maps each ``MetadataIndex`` to an ``ItemLocation`` (file, offset,
  length, ``xxh3_64`` checksum). It is written last, atomically: it is the commit point.

Once the new metadata is committed, the coordinator removes the data files of earlier
saves (only names of the form above that the new metadata does not reference).
"""

from dcp_impl.filesystem._reader import FileSystemReader
from dcp_impl.filesystem._writer import METADATA_FILE, FileSystemWriter, is_data_file

__all__ = ["METADATA_FILE", "FileSystemReader", "FileSystemWriter", "is_data_file"]
