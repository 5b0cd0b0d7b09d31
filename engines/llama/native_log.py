"""Capture llama.cpp's own log lines inside the engine host.

llama.cpp explains load failures ("unknown model architecture: 'x'",
"failed to allocate ...") only in its log. We route that log to Python
through ``llama_log_set`` so the engine can turn it into a sentence for
the user, and keep the last lines in memory. Debug lines are not kept:
llama.cpp prints hundreds of them per context (one per graph input), and
they would push out the lines that matter, such as the KV cache size or
the error that explains a failed load.
"""

from __future__ import annotations

import collections
import ctypes
import logging

log = logging.getLogger("llama.cpp")
GGML_LOG_LEVEL_DEBUG = 1
GGML_LOG_LEVEL_CONT = 5  # continues the previous message, at its level


class NativeLog:
    def __init__(self, keep: int = 200) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._partial = ""
        self._callback = None
        self._last_level = 0

    def install(self) -> None:
        if self._callback is not None:
            return
        import llama_cpp

        def on_log(level, text, _user_data) -> None:
            if level == GGML_LOG_LEVEL_CONT:
                level = self._last_level
            self._last_level = level
            if level == GGML_LOG_LEVEL_DEBUG:
                return
            try:
                chunk = text.decode("utf-8", errors="replace") if text else ""
            except Exception:
                return
            self._partial += chunk
            while "\n" in self._partial:
                line, self._partial = self._partial.split("\n", 1)
                if line.strip():
                    self._lines.append(line)
                    if level in (3, 4):  # GGML_LOG_LEVEL_WARN and _ERROR also go to the host log file
                        log.warning("%s", line)

        self._callback = llama_cpp.llama_log_callback(on_log)
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def also_capture(self, set_log) -> None:
        """Route another llama.cpp library's log here too (``set_log``: e.g. mtmd's ``mtmd_log_set``)."""
        self.install()
        set_log(self._callback, ctypes.c_void_p(0))

    def clear(self) -> None:
        self._lines.clear()
        self._partial = ""

    def text(self) -> str:
        return "\n".join(self._lines)

    def last_error(self) -> str:
        for line in reversed(self._lines):
            lowered = line.lower()
            if "error" in lowered or "failed" in lowered or "invalid" in lowered:
                return line.split(":", 1)[-1].strip() if ":" in line else line.strip()
        return ""


# llama_log_set is process-wide, so the capture is too.
NATIVE_LOG = NativeLog()
