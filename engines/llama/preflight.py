"""Checks before llama.cpp sees a file, so failures become sentences.

llama.cpp answers a missing, foreign, truncated or oversized model with a
bare "Failed to load model" (or, for some damage, a crash). We read the
GGUF header ourselves first and say exactly what is wrong.
"""

from __future__ import annotations

from pathlib import Path

from engines.errors import EngineError, ErrorKind
from engines.gguf import (
    GGUFError,
    GGUFTruncatedError,
    GGUFUnsupportedError,
    NotARegularFileError,
    NotGGUFError,
    read_gguf_header,
)
from engines.kv_cache import DEFAULT_CACHE_TYPE
from engines.library.fit import ModelShape, Resources, judge_text_fit


def check_model_file(path: Path):
    """Return the parsed GGUF header, or raise an EngineError that says what is wrong.

    The header is read without ever blocking: a FIFO, a device or a socket
    named like a model is refused in words (see :mod:`engines.gguf.regular`).
    """
    if not path.exists():
        raise EngineError(ErrorKind.MODEL_FILE, f"The model file does not exist: {path}")
    if path.is_dir():
        raise EngineError(ErrorKind.MODEL_FILE, f"Expected a .gguf file but got a folder: {path}")
    try:
        header = read_gguf_header(path)
    except NotGGUFError as exc:
        raise EngineError(ErrorKind.MODEL_FILE, f"{path.name}: {exc}") from None
    except GGUFTruncatedError as exc:
        raise EngineError(ErrorKind.MODEL_FILE, f"{path.name} is incomplete. {exc}") from None
    except GGUFUnsupportedError as exc:
        raise EngineError(ErrorKind.UNSUPPORTED, f"{path.name}: {exc}") from None
    except GGUFError as exc:
        raise EngineError(ErrorKind.MODEL_FILE, f"{path.name} is damaged: {exc}") from None
    except NotARegularFileError as exc:  # a FIFO would block llama.cpp's open for ever
        raise EngineError(ErrorKind.MODEL_FILE, exc.message) from None
    except OSError as exc:
        raise EngineError(ErrorKind.MODEL_FILE, f"Cannot read {path}: {exc.strerror or exc}") from None
    if not header.architecture:
        raise EngineError(ErrorKind.MODEL_FILE, f"{path.name} does not say which architecture it is (no general.architecture).")
    if header.duplicate_tokens:
        # llama.cpp aborts the whole process on a vocabulary with repeated entries.
        raise EngineError(ErrorKind.MODEL_FILE, f"{path.name} is damaged: its vocabulary lists some tokens twice.")
    if not header.tensors:
        raise EngineError(ErrorKind.MODEL_FILE, f"{path.name} holds no weights: it is not a model file.")
    return header


def check_memory_for_context(header, context_length: int, gpu_offload: bool = False, cache_type: str = DEFAULT_CACHE_TYPE):
    """Refuse a context that cannot fit in free memory, saying why and what would fit.

    ``cache_type`` is the context cache the model will be loaded with, so a
    q8_0 cache that makes a long context fit is let through.
    """
    from engines.library.hardware import probe

    resources = Resources.from_report(probe(), gpu_offload)
    verdict = judge_text_fit(ModelShape.from_header(header), context_length, resources, cache_type)
    if not verdict.fits:
        hint = " ".join(verdict.suggestions)
        raise EngineError(
            ErrorKind.MEMORY,
            f"Not enough memory for a context of {context_length:,} tokens: {verdict.explanation} {hint}".strip(),
        )
    return verdict
