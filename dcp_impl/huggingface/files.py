"""The files of a HuggingFace safetensors folder (docs/huggingface.md): their names and the
safetensors header codec, strict and bounded.

A public module for tools and tests that read or write these files themselves (a converter,
a test writing a folder as another tool would); saving and loading need only
:class:`~dcp_impl.huggingface.HuggingFaceWriter` / ``Reader``.
"""

from dcp_impl.huggingface._folder import INDEX_NAME, SIDECAR_NAME, SINGLE_FILE, read_header
from dcp_impl.huggingface._safetensors import (
    MAX_HEADER_BYTES,
    Header,
    TensorEntry,
    encode_header,
    parse_header,
)

__all__ = [
    "SINGLE_FILE",
    "INDEX_NAME",
    "SIDECAR_NAME",
    "MAX_HEADER_BYTES",
    "Header",
    "TensorEntry",
    "encode_header",
    "parse_header",
    "read_header",
]
