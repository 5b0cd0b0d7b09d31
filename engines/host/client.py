"""The parent side of the engine host.

:class:`EngineHost` spawns the host process on first use, sends it requests
and turns its replies back into events, results and exceptions. When the
process dies it raises :class:`EngineCrashed` with the reason in words, and
the next request starts a fresh process. It is used from one thread at a
time; :meth:`cancel` and :meth:`close` may be called from any thread.

By default the host is this interpreter, started with multiprocessing's
spawn context, a pipe, and a shared "cancelled up to" request id
(:mod:`engines.host.cancel`). Given ``python=...`` it runs under that
interpreter instead (a private engine environment, :mod:`engines.envs`,
started by :mod:`engines.host.foreign`). Crash detection is the same in
both: the process's exit is waited on next to the connection. Either host
dies with this process (:mod:`engines.host.watchdog`), and :meth:`close`
is bounded even when the host is stuck: Shutdown, a short wait, then kill.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Iterator

from engines.api import EngineEvent, FinishedEvent
from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.host.cancel import CANCEL_ALL, SharedCancels
from engines.host.exits import describe_exit
from engines.host.foreign import CancelLine, ForeignProcess, foreign_env, start_foreign_host
from engines.host.protocol import Done, Event, Failed, Generate, Load, Loaded, Ready, Shutdown

__all__ = ["EngineHost", "describe_exit", "foreign_env"]

SHUTDOWN_GRACE_S = 1.0  # how long close() lets a host finish on its own before killing it
KILL_WAIT_S = 2.0  # how long it then waits for the killed process to be reaped
CLOSED_WHILE_BUSY = "The engine was closed while it was busy."


class EngineHost:
    """One engine process, started on demand and restarted after a crash.

    ``python`` runs the host under another interpreter (``pythonpath``: the
    folders it needs to find the ``engines`` package; by default
    :func:`engines.host.standalone.engines_source_root`). ``start_timeout``
    bounds how long that interpreter may take to connect.
    """

    def __init__(
        self,
        log_path: Path,
        role: str = "text",
        python: str | None = None,
        pythonpath: list[str] | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._log_path = Path(log_path)
        self._role = role
        self._python = str(python) if python else None
        self._pythonpath = [str(p) for p in pythonpath] if pythonpath is not None else None
        self._start_timeout = start_timeout
        self._proc = None
        self._conn = None
        self._cancels = None  # SharedCancels or CancelLine: .cancel(request_id)
        self._ids = itertools.count(1)
        self._in_flight: int | None = None  # the request cancel() stops
        self._stopped_up_to = 0  # the last request cancel() stopped, as the host's flag will say
        self._loaded_key: tuple[str, Any] | None = None
        self.model_info: Any = None

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
        if self._python:
            self._proc, self._conn, self._cancels = start_foreign_host(
                self._python, self._pythonpath, self._log_path, self._role, self._start_timeout
            )
            self._expect(Ready)
            return
        from engines.host.process import host_main

        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_path.write_text("", encoding="utf-8")  # one run per log: the tail is this run's
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        cancels = SharedCancels.create(self._ctx)
        proc = self._ctx.Process(
            target=host_main,
            args=(child_conn, cancels.shared, str(self._log_path), os.getpid()),
            name=f"atelier-engine-host-{self._role}",
            daemon=True,
        )
        proc.start()
        child_conn.close()
        self._proc, self._conn, self._cancels = proc, parent_conn, cancels
        self._expect(Ready)

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
        if proc is None:
            return
        if cancels is not None:
            cancels.cancel(CANCEL_ALL)
        try:
            if conn is not None and proc.is_alive():
                conn.send(Shutdown())
        except (OSError, ValueError):
            pass
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(KILL_WAIT_S)
        if conn is not None:
            conn.close()
        if isinstance(proc, ForeignProcess):
            proc.release()
        if isinstance(cancels, CancelLine):
            cancels.close()

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
        request_id = self._begin()  # before the process starts: a Stop pressed meanwhile counts
        finished = False
        try:
            if self._loaded_key is not None or not self.is_running:
                self.close()
                self.start()
            if self._stopped_up_to >= request_id:
                self._cancels.cancel(request_id)
            self._send(Load(engine, spec, request_id))
            while True:
                message = self._receive()
                if isinstance(message, Event) and message.request_id == request_id:
                    if on_event is not None:
                        on_event(message.event)
                elif isinstance(message, Loaded) and message.request_id == request_id:
                    finished = True
                    self._loaded_key = key
                    self.model_info = message.info
                    return message.info
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
        request_id = self._begin()
        finished = False
        try:
            self._send(Generate(request_id, request))
            while True:
                message = self._receive()
                if isinstance(message, Event) and message.request_id == request_id:
                    yield message.event
                elif isinstance(message, Done) and message.request_id == request_id:
                    finished = True
                    yield FinishedEvent(message.result)
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
                message = self._receive()
                if isinstance(message, (Done, Failed, Loaded)) and message.request_id == request_id:
                    return
        except EngineError:
            return

    def _expect(self, kind: type) -> Any:
        message = self._receive()
        if not isinstance(message, kind):
            raise EngineError(ErrorKind.INTERNAL, f"The engine host sent {type(message).__name__}, expected {kind.__name__}.")
        return message

    def _send(self, message: Any) -> None:
        conn, proc = self._conn, self._proc
        if conn is None or proc is None:  # close() ran in another thread
            raise EngineCrashed(message=CLOSED_WHILE_BUSY)
        try:
            conn.send(message)
        except (OSError, ValueError):  # the pipe broke: the process is gone, or was closed meanwhile
            if proc is not self._proc:
                raise EngineCrashed(message=CLOSED_WHILE_BUSY) from None
            proc.join(1.0)
            raise self._crashed(proc) from None

    def _receive(self) -> Any:
        """The next message, or EngineCrashed as soon as the process is gone (or was closed)."""
        conn, proc = self._conn, self._proc
        if conn is None or proc is None:  # close() ran in another thread
            raise EngineCrashed(message=CLOSED_WHILE_BUSY)
        while True:
            try:
                sentinel = proc.sentinel
                if sentinel is None:  # no waitable exit here (macOS foreign host): poll
                    ready = wait([conn], timeout=0.2)
                    if not ready and proc.is_alive():
                        continue
                else:
                    ready = wait([conn, sentinel])
                if conn in ready:
                    return conn.recv()
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
        if conn is not None:
            conn.close()
        if isinstance(proc, ForeignProcess):
            proc.release()
        if isinstance(cancels, CancelLine):
            cancels.close()
        return EngineCrashed(message=describe_exit(exitcode, tail))
