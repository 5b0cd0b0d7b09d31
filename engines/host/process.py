"""The child side of the engine host: a loop that serves one engine.

It runs in a spawned process (:func:`host_main`) or, under another Python
interpreter, in a process started by :mod:`engines.host.standalone`; both
run the same :func:`serve` loop. Native output (llama.cpp's asserts, crash
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
    """The spawned host: serve requests from ``conn`` until told to stop or the parent goes away.

    ``cancel`` is the ``multiprocessing.Event`` the parent shares; it clears
    it before every request, so every request sees the same flag.
    """
    _redirect_output(log_path)
    serve(conn, lambda _request_id: cancel, log_path)


def serve(conn, cancel_for, log_path: str) -> None:
    """The serve loop both hosts share (the spawned one and :mod:`engines.host.standalone`).

    ``cancel_for(request_id)`` gives the flag the engine polls for that
    request: the shared event in the spawned host, a per-request flag set by
    the cancel connection in the standalone one.
    """
    log.info("engine host %d started (Python %s)", os.getpid(), sys.version.split()[0])
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

                result = engine.generate(message.request, emit, cancel_for(request_id))
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
