"""HuggingFace safetensors backend: HuggingFaceWriter, HuggingFaceReader, consolidate().

The folder layout is torch's (``torch.distributed.checkpoint.hf_storage``) and transformers';
docs/huggingface.md gives the rules. The modules behind the public names:
:mod:`._storage` (the writer and the reader), :mod:`._plan` (which file each chunk goes to),
:mod:`._write` (a rank's files), :mod:`._folder` (reading folders, committing saves),
:mod:`._consolidate` (:func:`consolidate`) and :mod:`._safetensors` (the header codec).
"""

from dcp_impl.huggingface._consolidate import consolidate
from dcp_impl.huggingface._storage import (
    SHARDED_DIR,
    HuggingFaceReader,
    HuggingFaceWriter,
    is_huggingface_folder,
)

__all__ = [
    "HuggingFaceReader",
    "HuggingFaceWriter",
    "consolidate",
    "is_huggingface_folder",
    "SHARDED_DIR",
]
