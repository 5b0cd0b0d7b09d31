"""The parent side of the engine host.

:class:`EngineHost` spawns the host process on first use, sends it requests
and turns its replies back into events, results and exceptions. When the
process dies it raises :class:`EngineCrashed` with the reason in words, and
the next request starts a fresh process. It is used from one thread at a
time; :meth:`cancel` alone may be called from any thread.

By default the host is this interpreter, started with multiprocessing's
spawn context, a pipe and a shared event as the cancel flag. Given
``python=...`` it runs under that interpreter instead (a private engine
environment, :mod:`engines.envs`): the parent listens on a
``multiprocessing.connection.Listener`` with a random key, the child
(:mod:`engines.host.standalone`) connects twice (requests, and a cancel
line) and serves the same protocol with the same loop. Crash detection is
the same in both: the process's exit is waited on next to the connection.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
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


def foreign_env(pythonpath: list[str] | None) -> dict[str, str]:
    """The environment of a Python that is not this one: ours, minus every PYTHON* variable.

    Only ``PYTHONPATH`` is set (to *pythonpath*), so nothing of this
    interpreter (PYTHONHOME, PYTHONSTARTUP, a venv's paths, user site
    packages) leaks into the other one. Inside a frozen app the loader
    paths the bundle set for itself are put back to the user's own.
    """
    env = {key: value for key, value in os.environ.items() if not key.upper().startswith("PYTHON")}
    if getattr(sys, "frozen", False):
        for var in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"):
            original = os.environ.get(f"{var}_ORIG")
            if original is not None:
                env[var] = original
            else:
                env.pop(var, None)
            env.pop(f"{var}_ORIG", None)
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONSAFEPATH"] = "1"  # 3.11+: no current directory on sys.path
    env["PYTHONIOENCODING"] = "utf-8"
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    return env


class _ForeignProcess:
    """A ``subprocess.Popen`` dressed as a ``multiprocessing.Process`` (pid, sentinel, exitcode, join)."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.sentinel = None  # something wait() can watch for the exit; None: poll instead
        if hasattr(os, "pidfd_open"):
            try:
                self.sentinel = os.pidfd_open(popen.pid)
            except OSError:
                self.sentinel = None
        elif sys.platform == "win32":
            self.sentinel = int(popen._handle)

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()  # negative: the signal that ended it, as multiprocessing reports it

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        try:
            self._popen.kill()
        except OSError:
            pass

    def release(self) -> None:
        if sys.platform != "win32" and isinstance(self.sentinel, int):
            try:
                os.close(self.sentinel)
            except OSError:
                pass
        self.sentinel = None


class _CancelLine:
    """The foreign host's cancel flag: a request id written to the second connection.

    Safe from any thread. Each request has its own flag in the child, so
    :meth:`clear` has nothing to do.
    """

    def __init__(self, conn, current_request: Callable[[], int]) -> None:
        self._conn = conn
        self._current = current_request
        self._lock = threading.Lock()

    def set(self) -> None:
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.send(int(self._current()))
            except (OSError, ValueError):
                pass

    def clear(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


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
        self._cancel = None
        self._ids = itertools.count(1)
        self._request_id = 0
        self._loaded_key: tuple[str, Any] | None = None
        self.model_info: Any = None

    # ---- lifecycle -------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def python(self) -> str | None:
        """The interpreter the host runs under; None for this one."""
        return self._python

    def start(self) -> None:
        if self.is_running:
            return
        if self._python:
            self._start_foreign()
            self._expect(Ready)
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

    def _start_foreign(self) -> None:
        """Start ``python -m engines.host.standalone`` and take its two connections."""
        from multiprocessing.connection import Client, Listener

        from engines.host.standalone import engines_source_root

        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_path.write_text("", encoding="utf-8")
        pythonpath = self._pythonpath
        if pythonpath is None:
            root = engines_source_root()
            pythonpath = [str(root)] if root is not None else []
        family = "AF_PIPE" if sys.platform == "win32" else "AF_UNIX"
        authkey = secrets.token_bytes(32)
        listener = Listener(family=family, authkey=authkey)  # a fresh address in a private temp folder
        accepted: list = []

        def accept() -> None:
            try:
                for _ in range(2):
                    accepted.append(listener.accept())
            except Exception as exc:  # noqa: BLE001 - reported below
                accepted.append(exc)

        command = [self._python, "-s", "-m", "engines.host.standalone", str(listener.address), str(self._log_path)]
        try:
            with open(self._log_path, "ab") as log:
                popen = subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=log, stderr=log,
                    env=foreign_env(pythonpath), cwd=str(self._log_path.parent),
                )
        except OSError as exc:
            listener.close()
            raise EngineError(ErrorKind.UNAVAILABLE, f"The engine's Python ({self._python}) could not be started: "
                                                     f"{exc.strerror or exc}.") from exc
        proc = _ForeignProcess(popen)
        try:
            popen.stdin.write((authkey.hex() + "\n").encode("ascii"))
            popen.stdin.close()
        except OSError:
            pass  # it died at once: reported below
        waiter = threading.Thread(target=accept, name=f"engine-host-{self._role}-accept", daemon=True)
        waiter.start()
        deadline = time.monotonic() + self._start_timeout
        while waiter.is_alive() and proc.is_alive() and time.monotonic() < deadline:
            waiter.join(0.05)
        for _ in range(2):  # unblock accept() if the child never connected
            if not waiter.is_alive():
                break
            try:
                Client(listener.address, family=family, authkey=authkey).close()
            except Exception:  # noqa: BLE001
                pass
            waiter.join(1.0)
        listener.close()
        conns = [item for item in accepted if not isinstance(item, Exception)]
        if len(conns) == 2 and proc.is_alive():
            self._proc = proc
            self._conn = conns[0]
            self._cancel = _CancelLine(conns[1], lambda: self._request_id)
            return
        for conn in conns:
            conn.close()
        timed_out = proc.is_alive()
        proc.kill()
        proc.join(5.0)
        proc.release()
        tail = self._log_tail()
        if timed_out:
            raise EngineCrashed(message=f"The engine did not start within {self._start_timeout:.0f} s under "
                                        f"{self._python}. Details are in {self._log_path}.")
        raise EngineCrashed(message=describe_exit(proc.exitcode, tail))

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
        if isinstance(proc, _ForeignProcess):
            proc.release()
            if isinstance(self._cancel, _CancelLine):
                self._cancel.close()

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
        self._request_id = request_id
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
            sentinel = proc.sentinel
            if sentinel is None:  # no waitable exit here (macOS foreign host): poll
                ready = wait([conn], timeout=0.2)
                if not ready and proc.is_alive():
                    continue
            else:
                ready = wait([conn, sentinel])
            if conn in ready:
                try:
                    return conn.recv()
                except (EOFError, OSError):
                    pass
            elif sentinel is not None and sentinel not in ready:
                continue
            proc.join(1.0)
            raise self._crashed()

    def _log_tail(self) -> str:
        try:
            return self._log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return ""

    def _crashed(self) -> EngineCrashed:
        exitcode = self._proc.exitcode if self._proc is not None else None
        tail = self._log_tail()
        if self._conn is not None:
            self._conn.close()
        if isinstance(self._proc, _ForeignProcess):
            self._proc.release()
            if isinstance(self._cancel, _CancelLine):
                self._cancel.close()
        self._proc = self._conn = None
        self._loaded_key = None
        self.model_info = None
        return EngineCrashed(message=describe_exit(exitcode, tail))
