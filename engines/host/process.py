"""The host side of the engine host: a loop that serves one engine.

:mod:`engines.host.standalone` starts it in its own process (under this
app's Python or the private image engine's), connected to the parent by
the request line, which :func:`serve` reads, and the cancel line (see
:mod:`engines.host.cancel`). Native output (llama.cpp's asserts, crash
messages) is redirected into a log file that the parent reads when the
process dies, so a crash can be explained in words.

Every frame is decoded by :mod:`engines.host.protocol`; one that is not a
message of the protocol (a pickle, a type the protocol does not carry, a
field of the wrong type) is answered with a :class:`Failed` of kind
``bad_input`` naming what was wrong, and the host keeps serving.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from engines.errors import EngineError, ErrorKind
from engines.host.protocol import (
    Done,
    Envelope,
    Event,
    Failed,
    Generate,
    Load,
    Loaded,
    ProtocolError,
    Shutdown,
    decode_to_host,
    encode,
    hello,
    request_id_of,
)

log = logging.getLogger("atelier.engine_host")

LOAD_STOPPED = "Loading the model was stopped."
REFUSED = "The engine host refused a message: {reason}."


def redirect_output(log_path: str) -> None:
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


def serve(conn, cancel_for, log_path: str) -> None:
    """Say Hello, then serve requests from ``conn`` until Shutdown or until the parent goes away.

    ``cancel_for(request_id)`` gives the flag the engine polls for that
    request, a load or a generation (see :mod:`engines.host.cancel`).
    """
    log.info("engine host %d started (Python %s)", os.getpid(), sys.version.split()[0])
    send = conn.send_bytes
    send(encode(hello()))
    engine = None
    while True:
        try:
            frame = conn.recv_bytes()
        except (EOFError, OSError):
            break  # the parent is gone
        try:
            message, payload = decode_to_host(frame)
        except ProtocolError as exc:
            log.warning("refused a frame of %d bytes: %s", len(frame), exc)
            send(encode(Failed(request_id_of(frame), ErrorKind.BAD_INPUT, REFUSED.format(reason=exc))))
            continue
        if isinstance(message, Shutdown):
            break
        request_id = message.request_id
        try:
            if isinstance(message, Load):
                if engine is not None:
                    engine.unload()
                    engine = None
                engine, info = _load(send, message, payload, cancel_for(request_id))
                send(encode(Loaded(request_id, Envelope.seal(info))))
            elif isinstance(message, Generate):
                if engine is None:
                    raise EngineError(ErrorKind.BAD_INPUT, "No model is loaded.")

                def emit(event, _rid=request_id):
                    send(encode(Event(_rid, Envelope.seal(event))))

                result = engine.generate(payload, emit, cancel_for(request_id))
                send(encode(Done(request_id, Envelope.seal(result))))
        except (BrokenPipeError, EOFError):
            break
        except EngineError as exc:
            log.info("request failed: %s: %s", exc.kind, exc.message)
            send(encode(Failed(request_id, exc.kind, exc.message)))
        except MemoryError:
            send(encode(Failed(request_id, ErrorKind.MEMORY, "The engine ran out of memory.")))
        except Exception as exc:  # a bug: keep serving, report where the details are
            log.error("unexpected error\n%s", traceback.format_exc())
            send(encode(Failed(
                request_id,
                ErrorKind.INTERNAL,
                f"The engine hit an unexpected error ({type(exc).__name__}: {exc}). Details are in {log_path}.",
            )))
    log.info("engine host %d stopping", os.getpid())
    if engine is not None:
        try:
            engine.unload()
        except Exception:
            pass


def _load(send, message: Load, spec, cancel):
    """Create the engine and load the model; a Stop during the load ends it as cancelled.

    The engine polls ``cancel`` at each step of its load; one that does not
    is still stopped here, once its load returns.
    """
    from engines.registry import get_plugin

    engine = get_plugin(message.engine).create()

    def emit(event, _rid=message.request_id):
        send(encode(Event(_rid, Envelope.seal(event))))

    info = engine.load(spec, emit, cancel)
    if cancel.is_set():
        engine.unload()
        raise EngineError(ErrorKind.CANCELLED, LOAD_STOPPED)
    return engine, info
