"""Reading GGUF model files without loading them (and without Qt).

``read_gguf_header(path)`` returns a :class:`GGUFHeader`: the metadata,
the tensor list and derived facts (architecture, layer count, KV-head
counts, quantization, bytes per layer) that the library, the memory
estimator and chat-format detection need before llama.cpp ever sees the
file. Malformed or hostile files raise a :class:`GGUFError` subclass whose
message can be shown to the user as is.
"""

from .header import (
    ArrayInfo,
    GGUFCorruptError,
    GGUFError,
    GGUFHeader,
    GGUFNeedMoreData,
    GGUFTruncatedError,
    GGUFUnsupportedError,
    NotGGUFError,
    TensorInfo,
)
from .reader import DEFAULT_MAX_HEADER_BYTES, read_gguf_header, read_gguf_header_from_bytes
from .regular import NotARegularFileError, open_regular_file, what_it_is

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "ArrayInfo",
    "GGUFCorruptError",
    "GGUFError",
    "GGUFHeader",
    "GGUFNeedMoreData",
    "GGUFTruncatedError",
    "GGUFUnsupportedError",
    "NotARegularFileError",
    "NotGGUFError",
    "TensorInfo",
    "open_regular_file",
    "read_gguf_header",
    "read_gguf_header_from_bytes",
    "what_it_is",
]
