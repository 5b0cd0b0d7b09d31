"""What a GGUF file says about itself: errors, tensor records and the header.

This module holds only plain, picklable data; the parsing lives in
:mod:`engines.gguf.reader`. Keeping the two apart lets other code (the
library scanner, the memory estimator, the engine host) depend on the
*shape* of a header without pulling in the parser, and lets a header cross
a process boundary unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from gguf.constants import LlamaFileType

__all__ = [
    "ArrayInfo",
    "GGUFCorruptError",
    "GGUFError",
    "GGUFHeader",
    "GGUFNeedMoreData",
    "GGUFTruncatedError",
    "GGUFUnsupportedError",
    "NotGGUFError",
    "TensorInfo",
]


# --------------------------------------------------------------------------- errors


class GGUFError(Exception):
    """Base class: ``message`` is written for a person and can be shown as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotGGUFError(GGUFError):
    """The file does not start with the GGUF magic: a different kind of file."""

    @classmethod
    def for_prefix(cls, prefix: bytes) -> NotGGUFError:
        """The error for a file starting with ``prefix``, naming what it looks
        like when that is recognisable (people do pick a ZIP or a web page)."""
        if not prefix:
            return cls("This is not a GGUF model file: it is empty.")
        msg = f"This is not a GGUF model file (it starts with {bytes(prefix[:4])!r})."
        if len(prefix) >= 10 and prefix[8:10] == b'{"':
            return cls(msg + " It looks like a .safetensors file: get a GGUF conversion.")
        for magic, what in _KNOWN_MAGIC:
            if prefix.startswith(magic):
                return cls(msg + f" It looks like {what}.")
        return cls(msg)


_OLD_GGML = "an old GGML-format model from before GGUF (2023): get a GGUF conversion"
# Leading bytes of files people mistake for GGUF models, with what to tell them.
_KNOWN_MAGIC = [
    (b"PK\x03\x04", "a ZIP archive, such as a PyTorch .bin/.pt checkpoint"),
    (b"version https://git-lfs", "a Git LFS pointer, not the model itself: download the real file"),
    (b"<", "a web page or XML, not a model: the download probably failed"),
    (b"{", "a JSON file, not a model"),
    (b"tjgg", _OLD_GGML), (b"lmgg", _OLD_GGML), (b"fmgg", _OLD_GGML),
    (b"\x89HDF", "an HDF5 file (Keras), not a GGUF model"),
    (b"\x80", "a Python pickle (PyTorch), not a GGUF model"),
]


class GGUFTruncatedError(GGUFError):
    """The file is shorter than its own header says it should be.

    ``expected_bytes`` and ``actual_bytes`` are the sizes compared (of the
    whole file, or of the tensor data section when the header itself was
    complete), so a UI can offer "download again" with numbers.
    """

    def __init__(self, message: str, expected_bytes: int, actual_bytes: int) -> None:
        super().__init__(message)
        self.expected_bytes = expected_bytes
        self.actual_bytes = actual_bytes

    def __reduce__(self):  # keep the numbers when pickled across processes
        return (type(self), (self.message, self.expected_bytes, self.actual_bytes))


class GGUFCorruptError(GGUFError):
    """The file claims to be GGUF but its header is malformed or hostile."""


class GGUFUnsupportedError(GGUFError):
    """A well-formed file this reader cannot use: big-endian, an unknown GGUF
    version or a tensor type newer than the installed ``gguf`` package."""


class GGUFNeedMoreData(GGUFError):
    """Only from the bytes reader: the buffer ended before the header did.

    ``needed_bytes`` is the minimum length of the file's prefix needed to get
    further (not necessarily to finish): a remote reader fetches at least that
    many bytes from offset 0 (more is cheaper: double it) and retries. It is a
    :class:`GGUFError` subclass, so catch it *before* catching ``GGUFError``.
    """

    def __init__(self, needed_bytes: int) -> None:
        super().__init__(
            f"Need at least {needed_bytes} bytes from the start of the file to read its header."
        )
        self.needed_bytes = needed_bytes

    def __reduce__(self):
        return (type(self), (self.needed_bytes,))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ArrayInfo:
    """Stands in for a large metadata array that was parsed but not kept.

    Token scores, token types and BPE merges can hold hundreds of thousands
    of entries that nothing outside llama.cpp needs; keeping only their
    element type (a ``GGUFValueType`` name such as ``"FLOAT32"``) and length
    keeps a header small enough to cache and to send between processes.
    """

    type: str
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's record from the header.

    ``shape`` is in GGUF (ggml) order, fastest-varying dimension first, which
    is the reverse of numpy's: ``token_embd.weight`` of a 640-wide model with
    a 262144-token vocabulary has shape ``(640, 262144)``. ``offset`` is
    relative to the start of the data section (:attr:`GGUFHeader.data_offset`).
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: str
    offset: int
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


_BLOCK_RE = re.compile(r"^blk\.(\d+)\.")


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class GGUFHeader:
    """Everything before the tensor data, plus derived facts about the model.

    ``metadata`` maps keys to plain Python values (int, float, bool, str,
    lists of those) or :class:`ArrayInfo` for large arrays, except
    ``tokenizer.ggml.tokens``, which is always kept as a list of strings
    because chat-format detection needs to look tokens up.
    Properties return ``None`` when a key is absent or has an unusable type,
    never raise: a header from an unfamiliar architecture still reads.
    """

    version: int
    metadata: dict[str, Any] = field(hash=False)
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    file_size: int | None
    alignment: int = 32

    # ---- general

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    @property
    def name(self) -> str | None:
        name = self.metadata.get("general.name")
        return name if isinstance(name, str) else None

    def arch_value(self, suffix: str) -> Any:
        """``metadata["{architecture}.{suffix}"]``, or None."""
        arch = self.architecture
        return None if arch is None else self.metadata.get(f"{arch}.{suffix}")

    # ---- hyperparameters

    @property
    def context_length(self) -> int | None:
        return _as_int(self.arch_value("context_length"))

    @property
    def block_count(self) -> int | None:
        return _as_int(self.arch_value("block_count"))

    @property
    def embedding_length(self) -> int | None:
        return _as_int(self.arch_value("embedding_length"))

    def _per_layer(self, suffix: str) -> list[int] | None:
        value = self.arch_value(suffix)
        if isinstance(value, list) and all(_as_int(v) is not None for v in value):
            return list(value)
        scalar = _as_int(value)
        if scalar is None:
            return None
        return [scalar] * (self.block_count or 1)

    @property
    def head_count_per_layer(self) -> list[int] | None:
        """Attention heads per layer. Some models (OpenELM) store a list here,
        most a single number; both come back as one entry per block."""
        return self._per_layer("attention.head_count")

    @property
    def head_count_kv_per_layer(self) -> list[int] | None:
        """KV heads per layer (0 for layers without attention, as in hybrid
        models). Defaults to the query head count, as llama.cpp does."""
        return self._per_layer("attention.head_count_kv") or self.head_count_per_layer

    @property
    def head_count(self) -> int | None:
        """The largest per-layer head count (the number for uniform models)."""
        per_layer = self.head_count_per_layer
        return max(per_layer) if per_layer else None

    @property
    def head_count_kv(self) -> int | None:
        """The largest per-layer KV head count; see :attr:`head_count_kv_per_layer`."""
        per_layer = self.head_count_kv_per_layer
        return max(per_layer) if per_layer else None

    def _head_dim_default(self) -> int | None:
        n_embd, n_head = self.embedding_length, self.head_count
        return n_embd // n_head if n_embd and n_head else None

    @property
    def key_length(self) -> int | None:
        """Per-head key size; llama.cpp's default is n_embd / n_head."""
        return _as_int(self.arch_value("attention.key_length")) or self._head_dim_default()

    @property
    def value_length(self) -> int | None:
        return _as_int(self.arch_value("attention.value_length")) or self._head_dim_default()

    @property
    def sliding_window(self) -> int | None:
        """Window size of sliding-window attention layers (Gemma, Mistral), or None."""
        return _as_int(self.arch_value("attention.sliding_window"))

    @property
    def sliding_window_pattern(self) -> int | list[bool] | None:
        """Which layers slide: an int period, or a per-layer list of bools."""
        value = self.arch_value("attention.sliding_window_pattern")
        if isinstance(value, list) or _as_int(value) is not None:
            return value
        return None

    # ---- tokenizer

    @property
    def chat_template(self) -> str | None:
        tpl = self.metadata.get("tokenizer.chat_template")
        return tpl if isinstance(tpl, str) else None

    @property
    def tokens(self) -> list[str] | None:
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        return tokens if isinstance(tokens, list) else None

    @property
    def vocab_size(self) -> int | None:
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        return len(tokens) if isinstance(tokens, (list, ArrayInfo)) else None

    @cached_property
    def _token_set(self) -> frozenset[str]:
        return frozenset(self.tokens or ())

    @property
    def duplicate_tokens(self) -> list[str]:
        """Token strings listed more than once. llama.cpp aborts the whole
        process (a GGML_ASSERT, not an error) on such a vocabulary, so an
        engine should refuse the file before loading it."""
        tokens = self.tokens
        if tokens is None or len(self._token_set) == len(tokens):
            return []
        seen: set[str] = set()
        return sorted({t for t in tokens if t in seen or seen.add(t)})

    def has_token(self, text: str) -> bool:
        """Whether ``text`` is one vocabulary entry (e.g. ``"<|im_start|>"``). O(1)
        after the first call."""
        return text in self._token_set

    def _token(self, key: str) -> str | None:
        index, tokens = _as_int(self.metadata.get(key)), self.tokens
        if index is None or tokens is None or not 0 <= index < len(tokens):
            return None
        return tokens[index]

    @property
    def bos_token(self) -> str | None:
        return self._token("tokenizer.ggml.bos_token_id")

    @property
    def eos_token(self) -> str | None:
        return self._token("tokenizer.ggml.eos_token_id")

    # ---- quantization and size

    @property
    def file_type(self) -> int | None:
        """The raw ``general.file_type`` number (a llama.cpp ``LlamaFileType``)."""
        return _as_int(self.metadata.get("general.file_type"))

    @property
    def quantization(self) -> str | None:
        """A label such as ``"Q4_K_M"``: from ``general.file_type`` when the file
        says, else the tensor type holding the most bytes among matrices."""
        ft = self.file_type
        if ft is not None:
            try:
                member = LlamaFileType(ft)
            except ValueError:
                member = None
            if member is not None and member is not LlamaFileType.GUESSED:
                return member.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        by_type: dict[str, int] = {}
        for t in self.tensors:
            if len(t.shape) >= 2:
                by_type[t.ggml_type] = by_type.get(t.ggml_type, 0) + t.nbytes
        return max(by_type, key=by_type.__getitem__) if by_type else None

    @property
    def tensor_data_bytes(self) -> int:
        """Bytes of tensor data (without alignment padding): what gets loaded."""
        return sum(t.nbytes for t in self.tensors)

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    def layer_tensor_bytes(self) -> dict[int, int]:
        """Tensor bytes per block index (tensors named ``blk.N.*``), ordered by
        index: what offloading N layers to a GPU costs."""
        per_layer: dict[int, int] = {}
        for t in self.tensors:
            m = _BLOCK_RE.match(t.name)
            if m:
                i = int(m.group(1))
                per_layer[i] = per_layer.get(i, 0) + t.nbytes
        return dict(sorted(per_layer.items()))

    @property
    def non_layer_bytes(self) -> int:
        """Bytes of tensors outside the blocks (embeddings, output head, norms)."""
        return sum(t.nbytes for t in self.tensors if not _BLOCK_RE.match(t.name))
