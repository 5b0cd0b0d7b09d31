"""The child side of the engine host: a loop that serves one engine.

It runs in a spawned process (:func:`host_main`) or, under another Python
interpreter, in a process started by :mod:`engines.host.standalone`; both
run the same :func:`serve` loop, and both die with their parent
(:mod:`engines.host.watchdog`). Native output (llama.cpp's asserts, crash
messages) is redirected into a log file that the parent reads when the
process dies, so a crash can be explained in words.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from engines.errors import EngineError, ErrorKind
from engines.host.cancel import SharedCancels
from engines.host.protocol import Done, Event, Failed, Generate, Load, Loaded, Ready, Shutdown
from engines.host.watchdog import die_with_parent

log = logging.getLogger("atelier.engine_host")

LOAD_STOPPED = "Loading the model was stopped."


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


def host_main(conn, cancelled_up_to, log_path: str, parent_pid: int) -> None:
    """The spawned host: serve requests from ``conn`` until told to stop or the parent goes away.

    ``cancelled_up_to`` is the shared number of :class:`~engines.host.cancel.SharedCancels`.
    """
    import multiprocessing

    parent = multiprocessing.parent_process()
    die_with_parent(parent_pid, parent.sentinel if parent is not None else None)
    _redirect_output(log_path)
    serve(conn, SharedCancels(cancelled_up_to).flag, log_path)


def serve(conn, cancel_for, log_path: str) -> None:
    """The serve loop both hosts share (the spawned one and :mod:`engines.host.standalone`).

    ``cancel_for(request_id)`` gives the flag the engine polls for that
    request, a load or a generation (see :mod:`engines.host.cancel`).
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
        request_id = getattr(message, "request_id", None)
        try:
            if isinstance(message, Load):
                if engine is not None:
                    engine.unload()
                    engine = None
                engine, info = _load(conn, message, cancel_for(request_id))
                conn.send(Loaded(info, request_id))
            elif isinstance(message, Generate):
                if engine is None:
                    raise EngineError(ErrorKind.BAD_INPUT, "No model is loaded.")

                def emit(event, _rid=request_id):
                    conn.send(Event(_rid, event))

                result = engine.generate(message.request, emit, cancel_for(request_id))
                conn.send(Done(request_id, result))
        except (BrokenPipeError, EOFError):
            break
        except EngineError as exc:
            log.info("request failed: %s: %s", exc.kind, exc.message)
            conn.send(Failed(request_id, exc.kind, exc.message))
        except MemoryError:
            conn.send(Failed(request_id, ErrorKind.MEMORY, "The engine ran out of memory."))
        except Exception as exc:  # a bug: keep serving, report where the details are
            log.error("unexpected error\n%s", traceback.format_exc())
            conn.send(
                Failed(
                    request_id,
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


def _load(conn, message: Load, cancel):
    """Create the engine and load the model; a Stop during the load ends it as cancelled.

    The engine polls ``cancel`` at each step of its load; one that does not
    is still stopped here, once its load returns.
    """
    from engines.registry import get_plugin

    engine = get_plugin(message.engine).create()

    def emit(event, _rid=message.request_id):
        conn.send(Event(_rid, event))

    info = engine.load(message.spec, emit, cancel)
    if cancel.is_set():
        engine.unload()
        raise EngineError(ErrorKind.CANCELLED, LOAD_STOPPED)
    return engine, info
