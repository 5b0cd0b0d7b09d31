"""The moving parts of an install: a base Python, running a command with cancel, the state file.

* :func:`find_base_python` finds the interpreter the environment is built
  on. A frozen app's ``sys.executable`` is the app itself, so it never
  qualifies. In order: ``ATELIER_ENGINE_PYTHON``; ``uv python find`` (a
  Python on the system, or one uv downloaded into the engine's folder
  earlier); ``uv python install`` when the network may be used.
* :func:`run_streaming` runs a command, hands every output line to a
  callback (and calls a tick about twice a second, for progress that is
  measured rather than printed), and stops it (its whole process group)
  when the cancel event is set.
* :class:`StateFile` is ``install.json``: what the last install did and
  whether it finished, replaced atomically, so an interrupted install is
  recognised on the next start.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from engines.errors import EngineError, ErrorKind
from engines.storage import atomic_write_text, state_lock

PYTHON_ENV = "ATELIER_ENGINE_PYTHON"
MIN_PYTHON = (3, 10)
PYTHON_REQUEST = ">=3.10,<3.14"  # what torch 2.13 and the pinned packages have wheels for
UV_PYTHON = "3.11"  # what uv downloads when the system has none

# Error kinds of the installer (short names for engines.errors.ErrorKind members); offline mode
# raises ErrorKind.OFFLINE.
NO_PYTHON = ErrorKind.NO_PYTHON
NO_SPACE = ErrorKind.DISK_SPACE
INSTALL_FAILED = ErrorKind.INSTALL_FAILED
CANCELLED = ErrorKind.CANCELLED
BUSY = ErrorKind.BUSY
BROKEN = ErrorKind.BROKEN

# A venv's Python answers with the interpreter it was made from, so the new environment never
# depends on another environment that may be deleted. (uv makes the environment: the base Python
# needs no venv or ensurepip module, so Debian's python3 without python3-venv works.)
_PROBE = ("import sys, json; base = getattr(sys, '_base_executable', '') "
          "if sys.prefix != sys.base_prefix else ''; print(json.dumps({'version': list(sys.version_info[:3]), "
          "'executable': base or sys.executable, 'frozen': bool(getattr(sys, 'frozen', False))}))")


@dataclass(frozen=True)
class BasePython:
    path: str
    version: tuple[int, int, int]
    source: str  # "ATELIER_ENGINE_PYTHON", "system" (found by uv), "uv" (downloaded by uv)


def _probe_python(path: str, timeout: float = 30.0) -> tuple[BasePython | None, str]:
    from engines.envs.health import clean_env

    try:
        run = subprocess.run([path, "-s", "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
                             env=clean_env(), encoding="utf-8", errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{path} could not be run ({exc})"
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{path} failed: {last}"
    try:
        info = json.loads(run.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, f"{path} did not answer like Python"
    version = tuple(info["version"])
    if info.get("frozen"):
        return None, f"{path} is a frozen app, not a Python"
    if version < MIN_PYTHON:
        return None, f"{path} is Python {'.'.join(map(str, version))}; 3.10 or newer is needed"
    return BasePython(info["executable"] or path, version, ""), ""


def _is_this_app(path: str) -> bool:
    if not getattr(sys, "frozen", False):
        return False
    try:
        return Path(path).resolve() == Path(sys.executable).resolve()
    except OSError:
        return False


def _uv_python(uv: str, env: dict[str, str], command: list[str], log: Callable[[str], None]) -> str | None:
    """Run ``uv python find|install``; the interpreter path that ``find`` printed, or None."""
    try:
        run = subprocess.run([uv, "python", *command], capture_output=True, text=True, timeout=900, env=env,
                             encoding="utf-8", errors="replace", stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"uv python {' '.join(command)}: {exc}")
        return None
    if run.returncode != 0:
        log(f"uv python {' '.join(command)} failed: {(run.stderr.strip().splitlines() or [''])[-1]}")
        return None
    lines = run.stdout.strip().splitlines()
    return lines[-1].strip() if command[0] == "find" and lines else ""


def find_base_python(uv: str, uv_env: dict[str, str], allow_download: bool,
                     log: Callable[[str], None] = lambda _m: None) -> BasePython:
    """The interpreter to build the environment on (see the module docstring), or EngineError(NO_PYTHON).

    *uv_env* names the engine's own folder for downloaded Pythons (``UV_PYTHON_INSTALL_DIR``), where
    ``uv python find`` looks too, so a Python uv downloaded for an earlier install is found again.
    """
    explicit = os.environ.get(PYTHON_ENV, "").strip()
    if explicit:
        found, why = _probe_python(explicit)
        if found is not None and not _is_this_app(found.path):
            return BasePython(found.path, found.version, PYTHON_ENV)
        raise EngineError(NO_PYTHON, f"{PYTHON_ENV} is set to {explicit}, which is not a usable Python "
                                     f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}+: {why or 'it is this app itself'}.")
    rejected: list[str] = []
    attempts = [("system", ["find", "--system", "--no-project", PYTHON_REQUEST])]
    if allow_download:
        attempts.append(("uv", ["install", UV_PYTHON]))
        attempts.append(("uv", ["find", "--system", "--managed-python", "--no-project", UV_PYTHON]))
    for source, command in attempts:
        path = _uv_python(uv, uv_env, command, log)
        if not path:
            continue
        found, why = _probe_python(path)
        if found is not None and not _is_this_app(found.path):
            return BasePython(found.path, found.version, source)
        rejected.append(why)
    detail = f" (tried: {'; '.join(r for r in rejected if r)})" if any(rejected) else ""
    download = ("" if allow_download else
                " Atelier can download one itself when it may use the internet (offline mode is on, or the "
                "install uses a folder of wheels).")
    raise EngineError(
        NO_PYTHON,
        "No Python 3.10–3.13 to build the image engine with was found." + download + " Install Python 3.11 "
        "(from python.org, or on Debian/Ubuntu: sudo apt install python3.11), or set "
        f"{PYTHON_ENV} to a Python 3.10–3.13 interpreter, then try again{detail}.",
    )


# ---- running commands ------------------------------------------------------------------


@dataclass
class RunResult:
    returncode: int
    lines: list[str]
    cancelled: bool = False


def run_streaming(command: list[str], on_line: Callable[[str], None], cancel: threading.Event | None,
                  env: dict[str, str] | None = None, cwd: str | None = None,
                  on_start: Callable[[subprocess.Popen], None] | None = None, keep: int = 400,
                  on_tick: Callable[[], None] | None = None, tick_s: float = 0.5) -> RunResult:
    """Run *command*, feeding each output line (stdout and stderr) to *on_line*; stop it on *cancel*.

    *on_tick*, when given, is called every *tick_s* seconds while the command runs (measured progress).
    """
    popen_kwargs: dict = {}
    if sys.platform == "win32":
        popen_kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        popen_kwargs["start_new_session"] = True  # its own group: a cancel stops uv's helpers too
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=cwd, text=True, encoding="utf-8", errors="replace", bufsize=1,
                            **popen_kwargs)
    if on_start is not None:
        on_start(proc)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line.rstrip("\r\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, name="installer-output", daemon=True)
    reader.start()
    tail: list[str] = []
    cancelled = False
    next_tick = time.monotonic() + tick_s
    while True:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            tail.append(line)
            del tail[:-keep]
            on_line(line)
        if cancel is not None and cancel.is_set() and not cancelled:
            cancelled = True
            stop_process_tree(proc)
        if on_tick is not None and not cancelled and time.monotonic() >= next_tick:
            next_tick = time.monotonic() + tick_s
            on_tick()
    proc.wait()
    reader.join(1.0)
    return RunResult(proc.returncode, tail, cancelled)


def stop_process_tree(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate *proc* and its process group; kill it if it does not go within *grace* seconds."""
    if proc.poll() is not None:
        return
    try:
        if sys.platform == "win32":
            proc.terminate()
        else:
            os.killpg(proc.pid, signal.SIGTERM)
    except OSError:
        pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            if sys.platform == "win32":
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass


# ---- install.json ----------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def process_start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - gone, or not ours to see
        return None


def process_alive(pid: int | None, started: float | None) -> bool:
    """Whether *pid* still runs and is the same process (not a reused pid)."""
    if not pid:
        return False
    current = process_start_time(int(pid))
    if current is None:
        return False
    return started is None or abs(current - float(started)) < 1.0


class StateFile:
    """``install.json``: read leniently, replaced atomically and durably (a crash leaves the old or the new one).

    The process that holds the install (``ImageEngineEnv._exclusive``) writes it; its
    read-modify-write still runs under the file's ``state_lock``, as every state file's does, so
    a repair or a status check in another process never interleaves with it. A damaged file
    reads as "no install recorded", and the folder it describes is then found as an unfinished
    install.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, data: dict) -> None:
        atomic_write_text(self.path, json.dumps(data, indent=2, ensure_ascii=False))

    def update(self, **changes) -> dict:
        with state_lock(self.path):
            data = self.read()
            data.update(changes)
            self.write(data)
        return data

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def tree_size(path: Path) -> int:
    """Bytes *path* takes on disk (allocated blocks where the OS reports them), symlinks not followed.

    A file with several hard links (uv links the environment's files to its cache) counts once.
    """
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except (NotADirectoryError, FileNotFoundError, PermissionError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            blocks = getattr(st, "st_blocks", None)
            total += blocks * 512 if blocks is not None else st.st_size
    return total


def remove_tree(path: Path) -> None:
    """Delete *path*, making read-only files writable on the way; EngineError if something stays."""
    if not path.exists() and not path.is_symlink():
        return

    def retry(func, target, _exc_info) -> None:
        try:
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=lambda func, target, _exc: retry(func, target, None))
    else:
        shutil.rmtree(path, onerror=retry)
    if path.exists():
        raise EngineError(BROKEN, f"Some files in {path} could not be deleted (in use, or not yours). Close "
                                  "anything that uses the image engine and try again.")

