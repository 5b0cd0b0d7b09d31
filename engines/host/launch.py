"""Starting an engine host: one transport for this interpreter and for another one.

The parent listens on a ``multiprocessing.connection.Listener`` (a Unix
socket, or a named pipe on Windows) with a random key, and starts the host
as a plain process:

* under this interpreter, ``python -m engines.host.standalone``, or in the
  frozen app the app itself, ``atelier --engine-host`` (its own Python has
  no ``-m``);
* under another interpreter (the private image-engine environment,
  :mod:`engines.envs`), ``<python> -s -m engines.host.standalone`` with
  the environment of :func:`foreign_env`.

Either way the key goes to the host's standard input (never the command
line, which every local user can read), the host connects twice (the
request line, then the cancel line) and speaks :mod:`engines.host.protocol`
over ``send_bytes``/``recv_bytes``. :func:`start_host` returns the process
dressed as a ``multiprocessing.Process`` (:class:`HostProcess`: the client
waits on its exit next to the connection), the request connection and the
cancel line. Native output goes to the log file from the first instant.
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
from engines.host.cancel import CancelLine
from engines.host.exits import EXIT_ANOTHER_VERSION, describe_exit
from engines.host.protocol import another_version

ENGINE_HOST_FLAG = "--engine-host"  # the frozen app's own entry into the host (desktop/cli.py)


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


def own_command(address: str, log_path: Path) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a host under this interpreter (what multiprocessing's spawn did)."""
    tail = [str(address), str(log_path), str(os.getpid())]
    env = dict(os.environ)
    if getattr(sys, "frozen", False):
        return [sys.executable, ENGINE_HOST_FLAG, *tail], env
    from engines.host.standalone import engines_source_root

    root = engines_source_root()  # this checkout (or install) first, as spawn passed our sys.path
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONSAFEPATH"] = "1"  # the log folder (its working directory) is not a place to import from
    flags = ["-s"] if sys.flags.no_user_site else []
    return [sys.executable, *flags, "-m", "engines.host.standalone", *tail], env


def foreign_command(python: str, pythonpath: list[str] | None, address: str, log_path: Path
                    ) -> tuple[list[str], dict[str, str]]:
    if pythonpath is None:
        from engines.host.standalone import engines_source_root

        root = engines_source_root()
        pythonpath = [str(root)] if root is not None else []
    return ([python, "-s", "-m", "engines.host.standalone", str(address), str(log_path), str(os.getpid())],
            foreign_env(pythonpath))


class HostProcess:
    """A ``subprocess.Popen`` dressed as a ``multiprocessing.Process`` (pid, sentinel, exitcode, join)."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.sentinel = None  # something wait() can watch for the exit; None: poll instead (macOS)
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


def start_host(python: str | None, pythonpath: list[str] | None, log_path: Path, role: str,
               start_timeout: float) -> tuple[HostProcess, object, CancelLine]:
    """Start a host (this interpreter when *python* is None); return (process, request connection, cancel line).

    Raises EngineError UNAVAILABLE when the interpreter cannot be started,
    and EngineCrashed, with the reason, when it ends or does not connect
    within *start_timeout* seconds.
    """
    from multiprocessing.connection import Client, Listener

    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("", encoding="utf-8")  # one run per log: the tail is this run's
    family = "AF_PIPE" if sys.platform == "win32" else "AF_UNIX"
    authkey = secrets.token_bytes(32)
    listener = Listener(family=family, authkey=authkey)  # a fresh address in a private temp folder
    if python:
        command, env = foreign_command(python, pythonpath, listener.address, log_path)
    else:
        command, env = own_command(listener.address, log_path)
    accepted: list = []

    def accept() -> None:
        try:
            for _ in range(2):
                accepted.append(listener.accept())
        except Exception as exc:  # noqa: BLE001 - reported below
            accepted.append(exc)

    try:
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=log, stderr=log, env=env, cwd=str(log_path.parent),
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),  # no console window flashing on Windows
            )
    except OSError as exc:
        listener.close()
        raise EngineError(ErrorKind.UNAVAILABLE, f"The engine's Python ({command[0]}) could not be started: "
                                                 f"{exc.strerror or exc}.") from exc
    proc = HostProcess(popen)
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
    for _ in range(2):  # unblock accept() if the host never connected
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
                                    f"{command[0]}. Details are in {log_path}.")
    if proc.exitcode == EXIT_ANOTHER_VERSION:
        raise another_version(bool(python), "it cannot speak this app's engine protocol")
    try:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
    except OSError:
        tail = ""
    raise EngineCrashed(message=describe_exit(proc.exitcode, tail))
