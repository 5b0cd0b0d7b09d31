"""Load llama.cpp's compute backends for builds with runtime CPU dispatch.

Portable builds (``GGML_BACKEND_DL`` with ``GGML_CPU_ALL_VARIANTS``) ship
one ``libggml-cpu-<variant>.so`` per instruction-set level and pick the
best one for this processor at run time. llama-cpp-python does not load
them itself, so we do, from its own library folder, before the first
model is loaded. Builds with the CPU backend linked in need nothing.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)


def library_dir() -> Path:
    import llama_cpp

    return Path(llama_cpp.__file__).resolve().parent / "lib"


def _ggml() -> ctypes.CDLL | None:
    """The libggml that libllama is linked against (its SONAME), not a copy of it.

    The wheel holds libggml.so, .so.0 and .so.0.x as separate files rather
    than links; opening the wrong one would load a second registry.
    """
    candidates = {"win32": ["ggml.dll"], "darwin": ["libggml.0.dylib", "libggml.dylib"]}.get(
        sys.platform, ["libggml.so.0", "libggml.so"]
    )
    for name in candidates:
        path = library_dir() / name
        if path.exists():
            return ctypes.CDLL(str(path), mode=getattr(ctypes, "RTLD_GLOBAL", 0))
    return None


@lru_cache(maxsize=1)
def ensure_backends_loaded() -> int:
    """Make sure at least one compute device is registered; return the device count."""
    import llama_cpp  # noqa: F401  (loads libllama and its ggml libraries first)

    from engines.llama.native_log import NATIVE_LOG

    NATIVE_LOG.install()  # ggml reports which CPU variant it picked: keep that off stderr
    lib = _ggml()
    if lib is None:
        return -1
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    count = lib.ggml_backend_dev_count()
    if count == 0:
        lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        lib.ggml_backend_load_all_from_path(str(library_dir()).encode())
        count = lib.ggml_backend_dev_count()
        log.info("loaded %d llama.cpp backend device(s) from %s", count, library_dir())
        for line in NATIVE_LOG.text().splitlines():
            if "load_backend" in line:
                log.info("%s", line.strip())  # which CPU variant ggml picked for this processor
    return int(count)


def cpu_variants() -> list[str]:
    """The CPU variant libraries shipped with this build (empty for a single-CPU build)."""
    return sorted(p.name for p in library_dir().glob("*ggml-cpu-*"))
