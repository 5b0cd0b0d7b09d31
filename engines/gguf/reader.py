"""A defensive GGUF header parser.

Why not ``gguf.GGUFReader``? It memory-maps the whole file and builds numpy
views of every field, which takes seconds for a 262k-token vocabulary and
trusts the counts it reads. Atelier reads headers of files a user just
picked or is about to download, so this parser:

* reads only the header, with large buffered reads (or from a byte prefix
  fetched over HTTP, asking for more with :class:`GGUFNeedMoreData`);
* checks every count and length against what the remaining bytes could hold
  before looping or allocating, so hostile input fails fast with a
  :class:`GGUFError` subclass and never hangs or exhausts memory;
* keeps large arrays as :class:`ArrayInfo` placeholders, except the token
  strings, which chat-format detection needs.

Layout (GGUF v2/v3, little-endian): magic ``GGUF``, u32 version, u64 tensor
count, u64 KV count, KV pairs (string key, u32 type, value), tensor infos
(string name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset), then
padding to ``general.alignment`` and the tensor data.
"""

from __future__ import annotations

import io
import os
import struct
from typing import Any, BinaryIO, Union

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from engines.byte_sizes import format_bytes

from .header import (
    ArrayInfo,
    GGUFCorruptError,
    GGUFHeader,
    GGUFNeedMoreData,
    GGUFTruncatedError,
    GGUFUnsupportedError,
    NotGGUFError,
    TensorInfo,
)
from .regular import open_regular_file

__all__ = ["DEFAULT_MAX_HEADER_BYTES", "read_gguf_header", "read_gguf_header_from_bytes"]

DEFAULT_MAX_HEADER_BYTES = 64 * 1024 * 1024
GGML_MAX_DIMS = 4
MAX_TENSORS = 1 << 20  # DeepSeek-V3 has ~1,100; a million is certainly garbage
MAX_KV = 1 << 16
MAX_ARRAY_DEPTH = 8
INLINE_ARRAY_LIMIT = 4096  # larger arrays become ArrayInfo (per-layer lists stay lists)
KEEP_STRINGS = frozenset({"tokenizer.ggml.tokens"})
_CHUNK = 1 << 20
_INT64_MAX = (1 << 63) - 1

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# value type -> (struct format char, size); STRING and ARRAY are handled apart
_FIXED = {0: ("B", 1), 1: ("b", 1), 2: ("H", 2), 3: ("h", 2), 4: ("I", 4), 5: ("i", 4),
          6: ("f", 4), 7: ("B", 1), 10: ("Q", 8), 11: ("q", 8), 12: ("d", 8)}
_STRING, _ARRAY, _BOOL = 8, 9, 7
_MIN_SIZE = {**{t: s for t, (_, s) in _FIXED.items()}, _STRING: 8, _ARRAY: 12}
_TYPE_NAMES = {int(t): t.name for t in GGUFValueType}
_GGML_TYPES = {int(t): t for t in GGMLQuantizationType}

Source = Union[str, "os.PathLike[str]", BinaryIO, bytes, bytearray, memoryview]

class _Parser:
    """Cursor over the file's prefix. ``buf[i]`` is the byte at absolute offset
    ``base + i``; ``_need(n)`` makes sure ``n`` bytes from ``i`` are present."""

    def __init__(self, data: Any, stream: Any, file_size: int | None, max_header_bytes: int):
        self.buf = data if data is not None else b""
        self.stream = stream  # None: bytes mode, the buffer is all there is
        self.base = 0
        self.i = 0
        self.file_size = file_size
        self.limit = max_header_bytes
        self.where = "the file header"

    # ---- buffer management

    def _need(self, n: int) -> None:
        if self.i + n > len(self.buf):
            self._fill(n)

    def _fill(self, n: int) -> None:
        end = self.base + self.i + n
        if end > self.limit:
            raise GGUFCorruptError(
                f"The model file is corrupt: while reading {self.where} it claims its header runs "
                f"to byte {end:,}, beyond the {format_bytes(self.limit)} limit for a GGUF header."
            )
        if self.file_size is not None and end > self.file_size:
            raise self._truncated(end, self.file_size)
        if self.stream is None:
            raise GGUFNeedMoreData(end)
        # compact (drop what was consumed), then read big chunks until n bytes are present
        parts = [self.buf[self.i:]]
        have = len(parts[0])
        self.base += self.i
        self.i = 0
        while have < n:
            chunk = self.stream.read(max(n - have, _CHUNK))
            if not chunk:
                self.buf = b"".join(parts)
                raise self._truncated(end, self.base + have)
            parts.append(chunk)
            have += len(chunk)
        self.buf = b"".join(parts)

    def _truncated(self, needed: int, size: int) -> GGUFTruncatedError:
        return GGUFTruncatedError(
            f"The file is truncated: it ends after {format_bytes(size)}, inside its header "
            f"(while reading {self.where}), which needs at least {format_bytes(needed)}. "
            "Download it again.",
            expected_bytes=needed,
            actual_bytes=size,
        )

    @property
    def pos(self) -> int:
        return self.base + self.i

    def _u32(self) -> int:
        self._need(4)
        (v,) = _U32.unpack_from(self.buf, self.i)
        self.i += 4
        return v

    def _u64(self) -> int:
        self._need(8)
        (v,) = _U64.unpack_from(self.buf, self.i)
        self.i += 8
        return v

    def _check_count(self, count: int, min_size: int, what: str) -> None:
        """Refuse a count whose smallest possible encoding would not fit in the
        header budget, before looping over it."""
        if count * min_size > self.limit - self.pos:
            raise GGUFCorruptError(
                f"The model file is corrupt: {self.where} declares {count:,} {what}, "
                f"more than fit in the {format_bytes(self.limit)} limit for a GGUF header."
            )

    def _str(self) -> str:
        n = self._u64()
        self._need(n)
        s = str(self.buf[self.i:self.i + n], "utf-8", "replace")
        self.i += n
        return s

    def _string_array(self, count: int, keep: bool) -> list[str] | None:
        """The hot loop (262k tokens): locals only, no per-element method calls
        unless the buffer needs refilling."""
        out: list[str] | None = [] if keep else None
        unpack = _U64.unpack_from
        for _ in range(count):
            buf, i = self.buf, self.i
            if i + 8 > len(buf):
                self._need(8)
                buf, i = self.buf, self.i
            (n,) = unpack(buf, i)
            i += 8
            if i + n > len(buf):
                self.i = i
                self._need(n)
                buf, i = self.buf, self.i
            if out is not None:
                out.append(str(buf[i:i + n], "utf-8", "replace"))
            self.i = i + n
        return out

    # ---- values

    def _value_type(self) -> int:
        t = self._u32()
        if t not in _MIN_SIZE:
            raise GGUFCorruptError(
                f"The model file is corrupt: {self.where} has value type {t}, which GGUF does not define."
            )
        return t

    def _value(self, t: int, key: str, depth: int = 0) -> Any:
        if t == _STRING:
            return self._str()
        if t != _ARRAY:
            fmt, size = _FIXED[t]
            self._need(size)
            (v,) = struct.unpack_from("<" + fmt, self.buf, self.i)
            self.i += size
            return bool(v) if t == _BOOL else v
        if depth >= MAX_ARRAY_DEPTH:
            raise GGUFCorruptError(f"The model file is corrupt: {self.where} nests arrays too deeply.")
        et = self._value_type()
        count = self._u64()
        self._check_count(count, _MIN_SIZE[et], "array elements")
        inline = count <= INLINE_ARRAY_LIMIT
        if et == _STRING:
            keep = inline or (depth == 0 and key in KEEP_STRINGS)
            out = self._string_array(count, keep)
            return out if keep else ArrayInfo("STRING", count)
        if et == _ARRAY:
            items = [self._value(_ARRAY, key, depth + 1) for _ in range(count)] if inline else None
            if not inline:
                for _ in range(count):
                    self._value(_ARRAY, key, depth + 1)
            return items if inline else ArrayInfo("ARRAY", count)
        fmt, size = _FIXED[et]
        self._need(count * size)
        items = None
        if inline:
            items = list(struct.unpack_from(f"<{count}{fmt}", self.buf, self.i))
            if et == _BOOL:
                items = [bool(v) for v in items]
        self.i += count * size
        return items if inline else ArrayInfo(_TYPE_NAMES[et], count)

    # ---- the file

    def parse(self) -> GGUFHeader:
        version = self._magic_and_version()
        n_tensors, n_kv = self._u64(), self._u64()
        if n_tensors > MAX_TENSORS:
            raise GGUFCorruptError(f"The model file is corrupt: it declares {n_tensors:,} tensors.")
        if n_kv > MAX_KV:
            raise GGUFCorruptError(f"The model file is corrupt: it declares {n_kv:,} metadata entries.")
        self._check_count(n_kv, 8 + 4 + 1, "metadata entries")
        metadata: dict[str, Any] = {}
        for k in range(n_kv):
            self.where = f"metadata entry #{k}"
            key = self._str()
            self.where = f"metadata key {key!r}"
            if key in metadata:
                raise GGUFCorruptError(f"The model file is corrupt: metadata key {key!r} appears twice.")
            metadata[key] = self._value(self._value_type(), key)
        alignment = self._alignment(metadata)
        self.where = "the tensor list"
        self._check_count(n_tensors, 8 + 4 + 4 + 8, "tensors")
        tensors = [self._tensor_info(k) for k in range(n_tensors)]
        data_offset = -(-self.pos // alignment) * alignment
        self._check_tensors(tensors, alignment, data_offset)
        return GGUFHeader(version=version, metadata=metadata, tensors=tuple(tensors),
                          data_offset=data_offset, file_size=self.file_size, alignment=alignment)

    def _magic_and_version(self) -> int:
        if self.stream is not None:  # prime the buffer so short files can be told apart
            parts, have = [], 0
            while have < 32:
                chunk = self.stream.read(_CHUNK)
                if not chunk:
                    break
                parts.append(chunk)
                have += len(chunk)
            self.buf = b"".join(parts)
        head = bytes(self.buf[:32])
        if len(head) < 8:
            at_eof = self.stream is not None or self.file_size == len(head)
            if (at_eof and not head) or (head and b"GGUF"[:len(head)] != head[:4]):
                raise NotGGUFError.for_prefix(head)
            self._need(8)  # raises GGUFTruncatedError or GGUFNeedMoreData
        magic = head[:4]
        (version,) = _U32.unpack_from(self.buf, 4)
        if magic == b"FUGG" or (magic == b"GGUF" and version & 0xFFFF == 0 and version >> 24 in (1, 2, 3)):
            raise GGUFUnsupportedError(
                "This GGUF file is big-endian (made for IBM mainframes); Atelier needs the usual "
                "little-endian kind. Get a standard GGUF conversion."
            )
        if magic != b"GGUF":
            raise NotGGUFError.for_prefix(head)
        if version == 1:
            raise GGUFUnsupportedError(
                "This is a GGUF version 1 file (from 2023), which llama.cpp no longer reads. "
                "Get a newer conversion of the model."
            )
        if version not in (2, 3):
            raise GGUFUnsupportedError(
                f"This GGUF file has version {version}; Atelier understands versions 2 and 3. "
                "It may be newer than Atelier, or corrupt."
            )
        self.i = 8
        return version

    def _alignment(self, metadata: dict[str, Any]) -> int:
        alignment = metadata.get("general.alignment", 32)
        if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 \
                or alignment & (alignment - 1):
            raise GGUFCorruptError(
                f"The model file is corrupt: its alignment {alignment!r} is not a power of two."
            )
        return alignment

    def _tensor_info(self, k: int) -> TensorInfo:
        self.where = f"tensor #{k}"
        name = self._str()
        self.where = f"tensor {name!r}"
        n_dims = self._u32()
        if n_dims > GGML_MAX_DIMS:
            raise GGUFCorruptError(
                f"The model file is corrupt: tensor {name!r} has {n_dims} dimensions; "
                f"GGUF allows at most {GGML_MAX_DIMS}."
            )
        self._need(8 * n_dims)
        shape = struct.unpack_from(f"<{n_dims}Q", self.buf, self.i)
        self.i += 8 * n_dims
        n_elements = 1
        for d in shape:
            n_elements *= d
        if any(d > _INT64_MAX for d in shape) or n_elements > _INT64_MAX:
            raise GGUFCorruptError(
                f"The model file is corrupt: tensor {name!r} has impossible dimensions {list(shape)}."
            )
        type_id = self._u32()
        ggml_type = _GGML_TYPES.get(type_id)
        if ggml_type is None or ggml_type not in GGML_QUANT_SIZES:
            raise GGUFUnsupportedError(
                f"Tensor {name!r} uses ggml type {type_id}, which this version of Atelier does not "
                "know. The file may be newer than Atelier (update it), or corrupt."
            )
        block, type_size = GGML_QUANT_SIZES[ggml_type]
        if (shape[0] if shape else 1) % block:
            raise GGUFCorruptError(
                f"The model file is corrupt: tensor {name!r} has rows of {shape[0]} values, "
                f"not a multiple of the {ggml_type.name} block size {block}."
            )
        offset = self._u64()
        return TensorInfo(name, tuple(shape), ggml_type.name, offset, n_elements // block * type_size)

    def _check_tensors(self, tensors: list[TensorInfo], alignment: int, data_offset: int) -> None:
        seen: set[str] = set()
        end = 0
        prev = None
        for t in tensors:
            if t.name in seen:
                raise GGUFCorruptError(f"The model file is corrupt: tensor {t.name!r} appears twice.")
            seen.add(t.name)
            if t.offset % alignment:
                raise GGUFCorruptError(
                    f"The model file is corrupt: tensor {t.name!r} starts at offset {t.offset}, "
                    f"which is not a multiple of the alignment ({alignment})."
                )
            if t.offset < end:
                raise GGUFCorruptError(
                    f"The model file is corrupt: tensor {t.name!r} (offset {t.offset}) overlaps "
                    f"or comes before {prev!r}, which ends at {end}."
                )
            end, prev = t.offset + t.nbytes, t.name
        if self.file_size is not None and tensors and data_offset + end > self.file_size:
            present = max(0, self.file_size - data_offset)
            raise GGUFTruncatedError(
                f"The file is truncated: the header declares {format_bytes(end)} of tensor data "
                f"but only {format_bytes(present)} are present. Download it again.",
                expected_bytes=end,
                actual_bytes=present,
            )


def read_gguf_header_from_bytes(
    data: bytes | bytearray | memoryview,
    file_size: int | None = None,
    *,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> GGUFHeader:
    """Parse a header from the first ``len(data)`` bytes of a GGUF file.

    For remote files: fetch a prefix with an HTTP Range request, call this,
    and on :class:`GGUFNeedMoreData` fetch at least ``needed_bytes`` and call
    again. Pass ``file_size`` (the Content-Length) when known: it turns
    "ran out of buffer past the end of the file" into
    :class:`GGUFTruncatedError` and enables the tensor-data size check.
    """
    buf = data if isinstance(data, bytes) else memoryview(data).cast("B")
    return _Parser(buf, None, file_size, max_header_bytes).parse()


def read_gguf_header(
    source: Source,
    *,
    file_size: int | None = None,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> GGUFHeader:
    """Read a GGUF header from a path, a binary file object or a whole file's bytes.

    A file object is read from its current position, which must be the start
    of the GGUF data; its size is taken from ``fileno()`` or by seeking when
    ``file_size`` is not given, so that truncation can be detected. Raises a
    :class:`GGUFError` subclass for anything wrong with the content, and
    ``OSError`` when the file cannot be opened or read:
    :class:`~engines.gguf.regular.NotARegularFileError` for a FIFO, a device
    or a folder, which is refused without blocking.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):  # the whole file, unlike the prefix reader
        size = memoryview(source).nbytes if file_size is None else file_size
        return read_gguf_header_from_bytes(source, size, max_header_bytes=max_header_bytes)
    if isinstance(source, (str, os.PathLike)):
        # Unbuffered (the parser reads in 1 MiB chunks), and never blocking on a FIFO or a device.
        with open_regular_file(source) as f:
            size = os.fstat(f.fileno()).st_size if file_size is None else file_size
            return _Parser(None, f, size, max_header_bytes).parse()
    if file_size is None:
        file_size = _stream_size(source)
    return _Parser(None, source, file_size, max_header_bytes).parse()


def _stream_size(stream: Any) -> int | None:
    """Bytes from the current position to the end of an open file object, or
    None when it cannot tell (a pipe, a network stream)."""
    try:
        here = stream.tell()
        try:
            total = os.fstat(stream.fileno()).st_size
        except (AttributeError, OSError, io.UnsupportedOperation):
            if not stream.seekable():
                return None
            total = stream.seek(0, io.SEEK_END)
            stream.seek(here)
        return max(0, total - here)
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        return None
