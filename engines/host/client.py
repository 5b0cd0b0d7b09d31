"""The parent side of the engine host.

:class:`EngineHost` starts the host process on first use, sends it requests
and turns its replies back into events, results and exceptions. When the
process dies it raises :class:`EngineCrashed` with the reason in words, and
the next request starts a fresh process. It is used from one thread at a
time; :meth:`cancel` and :meth:`close` may be called from any thread.

The host runs under this interpreter, or, given ``python=...``, under that
one (a private engine environment, :mod:`engines.envs`); both are started
the same way and speak the same typed protocol over the same transport
(:mod:`engines.host.launch`, :mod:`engines.host.protocol`), and the first
frame must be a Hello of this protocol version. Crash detection is the same
in both: the process's exit is waited on next to the connection. Either
host dies with this process (:mod:`engines.host.watchdog`), and
:meth:`close` is bounded even when the host is stuck: Shutdown, a short
wait, then kill.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Iterator

from engines.api import EngineEvent, FinishedEvent
from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.host.cancel import CANCEL_ALL
from engines.host.exits import describe_exit
from engines.host.launch import foreign_env, start_host
from engines.host.protocol import (
    Done,
    Envelope,
    Event,
    Failed,
    Generate,
    Hello,
    Load,
    Loaded,
    ProtocolError,
    Shutdown,
    check_hello,
    decode_from_host,
    encode,
)

__all__ = ["EngineHost", "describe_exit", "foreign_env"]

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 1.0  # how long close() lets a host finish on its own before killing it
KILL_WAIT_S = 2.0  # how long it then waits for the killed process to be reaped
CLOSED_WHILE_BUSY = "The engine was closed while it was busy."
UNREADABLE_REPLY = "The engine sent a message Atelier cannot read ({reason}); it was stopped. Details are in {log}."


class EngineHost:
    """One engine process, started on demand and restarted after a crash.

    ``python`` runs the host under another interpreter (``pythonpath``: the
    folders it needs to find the ``engines`` package; by default
    :func:`engines.host.standalone.engines_source_root`). ``start_timeout``
    bounds how long the host may take to connect. ``hello`` is what the
    running host said about itself (protocol version, pid, Python).
    """

    def __init__(
        self,
        log_path: Path,
        role: str = "text",
        python: str | None = None,
        pythonpath: list[str] | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self._log_path = Path(log_path)
        self._role = role
        self._python = str(python) if python else None
        self._pythonpath = [str(p) for p in pythonpath] if pythonpath is not None else None
        self._start_timeout = start_timeout
        self._proc = None
        self._conn = None
        self._cancels = None  # the CancelLine: .cancel(request_id)
        self._ids = itertools.count(1)
        self._in_flight: int | None = None  # the request cancel() stops
        self._stopped_up_to = 0  # the last request cancel() stopped, as the host's flag will say
        self._loaded_key: tuple[str, Any] | None = None
        self.model_info: Any = None
        self.hello: Hello | None = None

    # ---- lifecycle -------------------------------------------------------

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    @property
    def is_running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.is_alive()

    @property
    def python(self) -> str | None:
        """The interpreter the host runs under; None for this one."""
        return self._python

    def start(self) -> None:
        if self.is_running:
            return
        self._proc, self._conn, self._cancels = start_host(
            self._python, self._pythonpath, self._log_path, self._role, self._start_timeout
        )
        try:
            first, _ = self._receive()
        except EngineCrashed:
            raise
        except EngineError:  # not even a frame of this protocol (the host was stopped): another version's
            first = None
        try:
            self.hello = check_hello(first, foreign=self._python is not None)
        except EngineError as exc:
            log.warning("engine host %s: %s (its first message: %r)", self._role, exc.message, first)
            self.close()
            raise

    def close(self, timeout: float = SHUTDOWN_GRACE_S) -> None:
        """Stop the process, within about ``timeout`` + 2 s even when it is stuck.

        This is how a model's memory is given back in full. The request in
        flight is cancelled, the host is asked to shut down, and killed if it
        has not gone after ``timeout`` seconds (a host blocked in native
        code or in a hostile template never reads the Shutdown). A thread
        still waiting on the host gets :data:`CLOSED_WHILE_BUSY`.
        """
        proc, conn, cancels = self._proc, self._conn, self._cancels
        self._proc = self._conn = self._cancels = None
        self._loaded_key = None
        self.model_info = None
        self.hello = None
        if proc is None:
            return
        if cancels is not None:
            cancels.cancel(CANCEL_ALL)
        try:
            if conn is not None and proc.is_alive():
                conn.send_bytes(encode(Shutdown()))
        except (OSError, ValueError):
            pass
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(KILL_WAIT_S)
        self._release(proc, conn, cancels)

    unload = close

    # ---- requests --------------------------------------------------------

    def load(self, engine: str, spec: Any, on_event: Callable[[EngineEvent], None] | None = None) -> Any:
        """Load a model, reusing the loaded one when nothing changed.

        Switching to another model restarts the process, so the previous
        model's memory is returned to the system rather than to an allocator.
        :meth:`cancel` during the load ends it with an EngineError of kind
        ``cancelled``; the host stays up for the next request.
        """
        key = (engine, spec)
        if self._loaded_key == key and self.is_running:
            return self.model_info
        sealed = _seal(spec)
        request_id = self._begin()  # before the process starts: a Stop pressed meanwhile counts
        finished = False
        try:
            if self._loaded_key is not None or not self.is_running:
                self.close()
                self.start()
            if self._stopped_up_to >= request_id:
                self._cancels.cancel(request_id)
            self._send(Load(request_id, engine, sealed))
            while True:
                message, payload = self._receive()
                if isinstance(message, Event) and message.request_id == request_id:
                    if on_event is not None:
                        on_event(payload)
                elif isinstance(message, Loaded) and message.request_id == request_id:
                    finished = True
                    self._loaded_key = key
                    self.model_info = payload
                    return payload
                elif isinstance(message, Failed) and message.request_id == request_id:
                    finished = True
                    raise EngineError(message.kind, message.message)
        except EngineCrashed:
            finished = True
            raise
        finally:
            self._end(request_id, finished)

    def generate(self, request: Any) -> Iterator[EngineEvent]:
        """Stream the events of one request; the last one is a FinishedEvent.

        Abandoning the iterator early cancels the request and drains it, so
        the host is ready for the next one.
        """
        if not self.is_running or self._loaded_key is None:
            raise EngineError(ErrorKind.BAD_INPUT, "No model is loaded.")
        sealed = _seal(request)
        request_id = self._begin()
        finished = False
        try:
            self._send(Generate(request_id, sealed))
            while True:
                message, payload = self._receive()
                if isinstance(message, Event) and message.request_id == request_id:
                    yield payload
                elif isinstance(message, Done) and message.request_id == request_id:
                    finished = True
                    yield FinishedEvent(payload)
                    return
                elif isinstance(message, Failed) and message.request_id == request_id:
                    finished = True
                    raise EngineError(message.kind, message.message)
        except EngineCrashed:
            finished = True
            raise
        finally:
            self._end(request_id, finished)

    def cancel(self) -> None:
        """Stop the request in flight, a load or a generation; safe from any thread.

        Each request has its own flag, so a cancel never reaches a request
        that starts later. Between two requests there is nothing to stop: a
        caller running several requests as one task checks its own flag
        between them.
        """
        request_id, cancels = self._in_flight, self._cancels
        if request_id is None:
            return
        self._stopped_up_to = max(self._stopped_up_to, request_id)  # for a host that is still starting
        if cancels is not None:
            cancels.cancel(request_id)

    def kill(self) -> None:
        """Kill the process hard (tests use this to simulate a crash)."""
        proc = self._proc
        if proc is not None and proc.pid:
            os.kill(proc.pid, getattr(signal, "SIGKILL", signal.SIGTERM))

    # ---- plumbing --------------------------------------------------------

    def _begin(self) -> int:
        request_id = next(self._ids)
        self._in_flight = request_id
        return request_id

    def _end(self, request_id: int, finished: bool) -> None:
        """Clean up after a request; one abandoned mid-way is cancelled and drained."""
        cancels = self._cancels
        if not finished and cancels is not None and self.is_running:
            cancels.cancel(request_id)
            self._drain(request_id)
        if self._in_flight == request_id:
            self._in_flight = None

    def _drain(self, request_id: int) -> None:
        try:
            while True:
                message, _ = self._receive()
                if isinstance(message, (Done, Failed, Loaded)) and message.request_id == request_id:
                    return
        except EngineError:
            return

    def _send(self, message: Any) -> None:
        conn, proc = self._conn, self._proc
        if conn is None or proc is None:  # close() ran in another thread
            raise EngineCrashed(message=CLOSED_WHILE_BUSY)
        try:
            conn.send_bytes(encode(message))
        except (OSError, ValueError):  # the pipe broke: the process is gone, or was closed meanwhile
            if proc is not self._proc:
                raise EngineCrashed(message=CLOSED_WHILE_BUSY) from None
            proc.join(1.0)
            raise self._crashed(proc) from None

    def _receive(self) -> tuple[Any, Any]:
        """The next message and its payload, or EngineCrashed as soon as the process is gone (or was closed).

        A frame that is not a message of the protocol means the host cannot
        be trusted to be in step any more: it is stopped, and the request
        ends with :data:`UNREADABLE_REPLY`.
        """
        conn, proc = self._conn, self._proc
        if conn is None or proc is None:  # close() ran in another thread
            raise EngineCrashed(message=CLOSED_WHILE_BUSY)
        while True:
            try:
                sentinel = proc.sentinel
                if sentinel is None:  # no waitable exit here (macOS has no pidfd): poll
                    ready = wait([conn], timeout=0.2)
                    if not ready and proc.is_alive():
                        continue
                else:
                    ready = wait([conn, sentinel])
                if conn in ready:
                    frame = conn.recv_bytes()
                    try:
                        return decode_from_host(frame)
                    except ProtocolError as exc:
                        raise self._unreadable(proc, exc) from None
            except (EOFError, OSError, ValueError):
                pass  # the pipe broke or another thread closed it: the process is gone or going
            else:
                if sentinel is not None and sentinel not in ready:
                    continue
            if proc is not self._proc:  # close() ran in another thread
                raise EngineCrashed(message=CLOSED_WHILE_BUSY)
            proc.join(1.0)
            raise self._crashed(proc)

    def _log_tail(self) -> str:
        try:
            return self._log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return ""

    def _crashed(self, proc) -> EngineCrashed:
        exitcode = proc.exitcode
        tail = self._log_tail()
        conn, cancels = self._conn, self._cancels
        self._proc = self._conn = self._cancels = None
        self._loaded_key = None
        self.model_info = None
        self._release(proc, conn, cancels)
        return EngineCrashed(message=describe_exit(exitcode, tail))

    def _unreadable(self, proc, exc: ProtocolError) -> EngineError:
        log.error("engine host %s sent an unreadable frame: %s", self._role, exc)
        if proc is self._proc:
            self.close()
        return EngineError(ErrorKind.INTERNAL, UNREADABLE_REPLY.format(reason=exc, log=self._log_path))

    @staticmethod
    def _release(proc, conn, cancels) -> None:
        if conn is not None:
            conn.close()
        if cancels is not None:
            cancels.close()
        proc.release()


def _seal(obj: Any) -> Envelope:
    """An engine object ready to send; one the protocol does not carry is the caller's mistake, said in words."""
    try:
        return Envelope.seal(obj)
    except ProtocolError as exc:
        raise EngineError(ErrorKind.BAD_INPUT, f"This cannot be sent to the engine: {exc}.") from None
