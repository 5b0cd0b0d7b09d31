"""Checks before llama.cpp sees a file, so failures become sentences.

llama.cpp answers a missing, foreign, truncated or oversized model with a
bare "Failed to load model" (or, for some damage, a crash). We read the
GGUF header ourselves first and say exactly what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from engines.errors import EngineError, ErrorKind
from engines.gguf import GGUFError, GGUFTruncatedError, GGUFUnsupportedError, NotGGUFError, read_gguf_header
from engines.library.fit import RAM_RESERVE, estimate_text_memory, gb, largest_context_that_fits


def check_model_file(path: Path):
    """Return the parsed GGUF header, or raise an EngineError that says what is wrong."""
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


def check_memory_for_context(header, context_length: int, gpu_layers: int = 0) -> None:
    """Refuse a context that cannot fit in free memory, and suggest one that does."""
    if gpu_layers != 0:
        return  # the GPU split is judged by the fit estimator of the model library
    estimate = estimate_text_memory(header, context_length)
    available = psutil.virtual_memory().available - RAM_RESERVE
    if estimate.total_bytes <= available:
        return
    suggestion = largest_context_that_fits(header, available, context_length // 2)
    hint = f" A context of {suggestion:,} tokens would fit." if suggestion else " Close other programs or pick a smaller model."
    raise EngineError(
        ErrorKind.MEMORY,
        f"A context of {context_length:,} tokens needs about {gb(estimate.total_bytes)} "
        f"({gb(estimate.weights_bytes)} weights + {gb(estimate.kv_cache_bytes)} context cache + "
        f"{gb(estimate.buffers_bytes + estimate.overhead_bytes)} buffers), but only {gb(max(0, available))} "
        f"of memory is free.{hint}",
    )
