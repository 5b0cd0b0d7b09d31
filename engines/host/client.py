"""The parent side of the engine host.

:class:`EngineHost` spawns the host process on first use, sends it requests
and turns its replies back into events, results and exceptions. When the
process dies it raises :class:`EngineCrashed` with the reason in words, and
the next request starts a fresh process. It is used from one thread at a
time; :meth:`cancel` alone may be called from any thread.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Iterator

from engines.api import EngineEvent, FinishedEvent
from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.host.protocol import Done, Event, Failed, Generate, Load, Loaded, Ready, Shutdown

_SIGNAL_REASONS = {
    signal.SIGSEGV: "it crashed (segmentation fault)",
    signal.SIGABRT: "it aborted, usually a failed check inside llama.cpp",
    signal.SIGKILL: "it was killed, most likely because the system ran out of memory",
    signal.SIGBUS: "it crashed (bus error), often a model file that changed or vanished while loaded",
    signal.SIGILL: "it used a CPU instruction this processor does not have",
    signal.SIGTERM: "it was terminated",
}


def describe_exit(exitcode: int | None, log_tail: str = "") -> str:
    """A sentence for the user about why the host process ended."""
    if exitcode is None:
        reason = "it stopped answering"
    elif exitcode < 0:
        try:
            sig = signal.Signals(-exitcode)
            reason = _SIGNAL_REASONS.get(sig, f"it was stopped by signal {sig.name}")
        except ValueError:
            reason = f"it was stopped by signal {-exitcode}"
    else:
        reason = f"it exited with code {exitcode}"
    detail = _interesting_line(log_tail)
    message = f"The engine stopped unexpectedly: {reason}."
    if detail:
        message += f" Last message: {detail}"
    return message


def _interesting_line(log_tail: str) -> str:
    keys = ("GGML_ASSERT", "error", "Error", "failed", "Killed", "Fatal")
    for line in reversed(log_tail.splitlines()):
        if any(key in line for key in keys):
            return line.strip()[:300]
    return ""


class EngineHost:
    """One engine process, started on demand and restarted after a crash."""

    def __init__(self, log_path: Path, role: str = "text") -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._log_path = Path(log_path)
        self._role = role
        self._proc = None
        self._conn = None
        self._cancel = None
        self._ids = itertools.count(1)
        self._loaded_key: tuple[str, Any] | None = None
        self.model_info: Any = None

    # ---- lifecycle -------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def start(self) -> None:
        if self.is_running:
            return
        from engines.host.process import host_main

        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_path.write_text("", encoding="utf-8")  # one run per log: the tail is this run's
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        self._cancel = self._ctx.Event()
        self._proc = self._ctx.Process(
            target=host_main,
            args=(child_conn, self._cancel, str(self._log_path)),
            name=f"atelier-engine-host-{self._role}",
            daemon=True,
        )
        self._proc.start()
        child_conn.close()
        self._conn = parent_conn
        self._expect(Ready)

    def close(self, timeout: float = 3.0) -> None:
        """Stop the process. This is how a model's memory is given back in full."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        self._loaded_key = None
        self.model_info = None
        if proc is None:
            return
        if self._cancel is not None:
            self._cancel.set()
        try:
            if conn is not None and proc.is_alive():
                conn.send(Shutdown())
        except (BrokenPipeError, OSError):
            pass
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout)
        if conn is not None:
            conn.close()

    unload = close

    # ---- requests --------------------------------------------------------

    def load(self, engine: str, spec: Any, on_event: Callable[[EngineEvent], None] | None = None) -> Any:
        """Load a model, reusing the loaded one when nothing changed.

        Switching to another model restarts the process, so the previous
        model's memory is returned to the system rather than to an allocator.
        """
        key = (engine, spec)
        if self._loaded_key == key and self.is_running:
            return self.model_info
        if self._loaded_key is not None or not self.is_running:
            self.close()
            self.start()
        self._conn.send(Load(engine, spec))
        while True:
            message = self._receive()
            if isinstance(message, Event):
                if on_event is not None:
                    on_event(message.event)
            elif isinstance(message, Loaded):
                self._loaded_key = key
                self.model_info = message.info
                return message.info
            elif isinstance(message, Failed):
                raise EngineError(message.kind, message.message)

    def generate(self, request: Any) -> Iterator[EngineEvent]:
        """Stream the events of one request; the last one is a FinishedEvent.

        Abandoning the iterator early cancels the request and drains it, so
        the host is ready for the next one.
        """
        if not self.is_running or self._loaded_key is None:
            raise EngineError(ErrorKind.BAD_INPUT, "No model is loaded.")
        request_id = next(self._ids)
        self._cancel.clear()
        self._conn.send(Generate(request_id, request))
        finished = False
        try:
            while True:
                message = self._receive()
                if isinstance(message, Event) and message.request_id == request_id:
                    yield message.event
                elif isinstance(message, Done) and message.request_id == request_id:
                    finished = True
                    yield FinishedEvent(message.result)
                    return
                elif isinstance(message, Failed):
                    finished = True
                    raise EngineError(message.kind, message.message)
        except EngineCrashed:
            finished = True
            raise
        finally:
            if not finished and self.is_running:
                self._cancel.set()
                self._drain(request_id)

    def cancel(self) -> None:
        """Ask the running request to stop; safe from any thread."""
        if self._cancel is not None:
            self._cancel.set()

    def kill(self) -> None:
        """Kill the process hard (tests use this to simulate a crash)."""
        if self._proc is not None and self._proc.pid:
            os.kill(self._proc.pid, signal.SIGKILL)

    # ---- plumbing --------------------------------------------------------

    def _drain(self, request_id: int) -> None:
        try:
            while True:
                message = self._receive()
                if isinstance(message, (Done, Failed)) and getattr(message, "request_id", None) == request_id:
                    return
        except EngineError:
            return

    def _expect(self, kind: type) -> Any:
        message = self._receive()
        if not isinstance(message, kind):
            raise EngineError(ErrorKind.INTERNAL, f"The engine host sent {type(message).__name__}, expected {kind.__name__}.")
        return message

    def _receive(self) -> Any:
        """The next message, or EngineCrashed as soon as the process is gone."""
        conn, proc = self._conn, self._proc
        if conn is None or proc is None:
            raise EngineCrashed(message="The engine is not running.")
        while True:
            ready = wait([conn, proc.sentinel])
            if conn in ready:
                try:
                    return conn.recv()
                except (EOFError, OSError):
                    pass
            elif proc.sentinel not in ready:
                continue
            proc.join(1.0)
            raise self._crashed()

    def _crashed(self) -> EngineCrashed:
        exitcode = self._proc.exitcode if self._proc is not None else None
        try:
            tail = self._log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            tail = ""
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
        self._loaded_key = None
        self.model_info = None
        return EngineCrashed(message=describe_exit(exitcode, tail))
