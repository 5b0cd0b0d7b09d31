"""Hooks around ``llama_cpp.Llama(...)``: a load that can be stopped, and no template work of its own.

``Llama()`` offers neither, so both are done by swapping a library function
for the duration of the constructor (the engine host loads one model at a
time, on one thread):

- :func:`abortable_model_load` gives llama.cpp's model loader a progress
  callback. llama.cpp calls it for every tensor it loads; returning False
  aborts the load, which is how Stop reaches a model that is loading.
  The same callback reports progress, a few times a second;
- :func:`skip_library_chat_templates`: the constructor compiles every chat
  template in the file with llama-cpp-python's ``Jinja2ChatFormatter``.
  Atelier renders templates itself, under a budget
  (:mod:`engines.llama.template_sandbox`), so the library's compile is
  skipped: a template that does not parse cannot abort the load of an
  otherwise fine model, and Jinja's compile-time constant folding of
  ``'x'*100000*100000`` cannot allocate ten gigabytes before anything
  checks it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

PROGRESS_INTERVAL_S = 0.25


@contextlib.contextmanager
def abortable_model_load(cancel: Any, on_progress: Callable[[float], None] | None = None):
    """While active, a model load stops as soon as ``cancel.is_set()``; ``on_progress(0..1)`` is throttled."""
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params
    last = [0.0]

    def progress(fraction: float, _data) -> bool:
        if cancel is not None and cancel.is_set():
            return False
        now = time.monotonic()
        if on_progress is not None and now - last[0] >= PROGRESS_INTERVAL_S:
            last[0] = now
            try:
                on_progress(float(fraction))
            except Exception:  # noqa: BLE001 - never let a report break the load
                pass
        return True

    callback = lib.llama_progress_callback(progress)  # kept alive by this frame while llama.cpp may call it

    def params():
        result = original()
        result.progress_callback = callback
        return result

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = original


@contextlib.contextmanager
def skip_library_chat_templates():
    """While active, llama-cpp-python's chat formatters are created without compiling their template."""
    from llama_cpp import llama_chat_format as fmt

    original = fmt.Jinja2ChatFormatter

    class NotCompiled(original):
        def __init__(self, *args, **kwargs):  # noqa: D401 - no compile, on purpose
            self.template = kwargs.get("template", args[0] if args else "")

        def __call__(self, *args, **kwargs):
            raise RuntimeError("Atelier renders chat templates itself (engines.llama.templates).")

    fmt.Jinja2ChatFormatter = NotCompiled
    try:
        yield
    finally:
        fmt.Jinja2ChatFormatter = original
