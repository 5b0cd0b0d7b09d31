"""Starting the engine host under another Python interpreter (a private engine environment).

The parent listens on a ``multiprocessing.connection.Listener`` with a
random key and starts ``python -m engines.host.standalone``; the child
connects twice (requests, and a cancel line) and serves the same protocol
with the same loop as the spawned host. :func:`start_foreign_host` returns
the process dressed as a ``multiprocessing.Process`` (so the client waits on
its exit the same way), the request connection, and the cancel line.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.host.exits import describe_exit


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


class ForeignProcess:
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


class CancelLine:
    """The foreign host's cancel flags: a request id written to the second connection.

    Safe from any thread. The child keeps "cancelled up to" itself
    (:class:`engines.host.cancel.RequestCancels`).
    """

    def __init__(self, conn) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def cancel(self, request_id: int) -> None:
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.send(int(request_id))
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def start_foreign_host(python: str, pythonpath: list[str] | None, log_path: Path, role: str,
                       start_timeout: float):
    """Start ``python -m engines.host.standalone``; return (process, request connection, cancel line)."""
    from multiprocessing.connection import Client, Listener

    from engines.host.standalone import engines_source_root

    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("", encoding="utf-8")
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

    command = [python, "-s", "-m", "engines.host.standalone", str(listener.address), str(log_path), str(os.getpid())]
    try:
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=log, stderr=log,
                env=foreign_env(pythonpath), cwd=str(log_path.parent),
            )
    except OSError as exc:
        listener.close()
        raise EngineError(ErrorKind.UNAVAILABLE, f"The engine's Python ({python}) could not be started: "
                                                 f"{exc.strerror or exc}.") from exc
    proc = ForeignProcess(popen)
    try:
        popen.stdin.write((authkey.hex() + "\n").encode("ascii"))
        popen.stdin.close()
    except OSError:
        pass  # it died at once: reported below
    waiter = threading.Thread(target=accept, name=f"engine-host-{role}-accept", daemon=True)
    waiter.start()
    deadline = time.monotonic() + start_timeout
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
        return proc, conns[0], CancelLine(conns[1])
    for conn in conns:
        conn.close()
    timed_out = proc.is_alive()
    proc.kill()
    proc.join(5.0)
    proc.release()
    if timed_out:
        raise EngineCrashed(message=f"The engine did not start within {start_timeout:.0f} s under "
                                    f"{python}. Details are in {log_path}.")
    try:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
    except OSError:
        tail = ""
    raise EngineCrashed(message=describe_exit(proc.exitcode, tail))
