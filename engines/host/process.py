"""The child side of the engine host: a loop that serves one engine.

It runs in a spawned process. Native output (llama.cpp's asserts, crash
messages) is redirected into a log file that the parent reads when the
process dies, so a crash can be explained in words.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from engines.errors import EngineError, ErrorKind
from engines.host.protocol import Done, Event, Failed, Generate, Load, Loaded, Ready, Shutdown, Unload

log = logging.getLogger("atelier.engine_host")


def _redirect_output(log_path: str) -> None:
    """Send fd 1 and 2 (native code writes there) and Python logging to the log file."""
    stream = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(stream.fileno(), 2)
    os.dup2(stream.fileno(), 1)
    sys.stderr = stream
    sys.stdout = stream
    logging.basicConfig(
        level=logging.INFO,
        stream=stream,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def host_main(conn, cancel, log_path: str) -> None:
    """Serve requests from ``conn`` until told to stop or the parent goes away."""
    _redirect_output(log_path)
    log.info("engine host %d started", os.getpid())
    conn.send(Ready(os.getpid()))
    engine = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        if isinstance(message, Shutdown):
            break
        try:
            if isinstance(message, Load):
                if engine is not None:
                    engine.unload()
                    engine = None
                from engines.registry import get_plugin

                candidate = get_plugin(message.engine).create()

                def emit(event):
                    conn.send(Event(None, event))

                info = candidate.load(message.spec, emit)
                engine = candidate
                conn.send(Loaded(info))
            elif isinstance(message, Generate):
                if engine is None:
                    raise EngineError(ErrorKind.BAD_INPUT, "No model is loaded.")
                request_id = message.request_id

                def emit(event, _rid=request_id):
                    conn.send(Event(_rid, event))

                result = engine.generate(message.request, emit, cancel)
                conn.send(Done(request_id, result))
            elif isinstance(message, Unload):
                if engine is not None:
                    engine.unload()
                    engine = None
                conn.send(Done(None, None))
        except (BrokenPipeError, EOFError):
            break
        except EngineError as exc:
            log.info("request failed: %s: %s", exc.kind, exc.message)
            conn.send(Failed(getattr(message, "request_id", None), exc.kind, exc.message))
        except MemoryError:
            conn.send(Failed(getattr(message, "request_id", None), ErrorKind.MEMORY, "The engine ran out of memory."))
        except Exception as exc:  # a bug: keep serving, report where the details are
            log.error("unexpected error\n%s", traceback.format_exc())
            conn.send(
                Failed(
                    getattr(message, "request_id", None),
                    ErrorKind.INTERNAL,
                    f"The engine hit an unexpected error ({type(exc).__name__}: {exc}). Details are in {log_path}.",
                )
            )
    log.info("engine host %d stopping", os.getpid())
    if engine is not None:
        try:
            engine.unload()
        except Exception:
            pass
