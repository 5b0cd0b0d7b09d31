"""Is this file a GGUF model llama.cpp can be given? The header check, in sentences.

llama.cpp answers a missing, foreign, truncated or damaged model with a bare
"Failed to load model" (or, for some damage, a crash), so the header is read
here first and what is wrong is said in words. It lives with the file format
because two layers need it: the probe registry (``engines.library.probes``),
which decides what a dropped file is, and the llama.cpp engine, which checks
again just before loading.
"""

from __future__ import annotations

from pathlib import Path

from engines.errors import EngineError, ErrorKind
from engines.gguf.header import GGUFError, GGUFHeader, GGUFTruncatedError, GGUFUnsupportedError, NotGGUFError
from engines.gguf.reader import read_gguf_header
from engines.gguf.regular import NotARegularFileError


def check_model_file(path: Path) -> GGUFHeader:
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
