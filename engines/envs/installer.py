"""The moving parts of an install: a base Python, a virtual environment, pip with progress.

* :func:`find_base_python` finds the interpreter the environment is built
  on. A frozen app's ``sys.executable`` is the app itself, so it never
  qualifies. In order: ``ATELIER_ENGINE_PYTHON``; ``uv python find`` /
  ``uv python install`` when ``uv`` is there (and the network may be used);
  ``python3.11``, ``python3.12``, ``python3.13``, ``python3.10``,
  ``python3`` on PATH.
* :func:`run_streaming` runs a command, hands every output line to a
  callback, and stops it (its whole process group) when the cancel event
  is set.
* :class:`PipProgress` turns pip's output into progress: packages seen and
  installed, ``Downloading … (N MB)``, and the byte counts pip prints with
  ``--progress-bar raw``.
* :class:`StateFile` is ``install.json``: what the last install did and
  whether it finished, written atomically, so an interrupted install is
  recognised on the next start.
"""

from __future__ import annotations

import json
import os
import queue
import re
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

from engines.errors import EngineError

PYTHON_ENV = "ATELIER_ENGINE_PYTHON"
MIN_PYTHON = (3, 10)
PATH_CANDIDATES = ("python3.11", "python3.12", "python3.13", "python3.10", "python3", "python")
UV_PYTHON = "3.11"

# Error kinds of the installer (EngineError.kind); offline mode raises engines.library.network.OFFLINE.
NO_PYTHON = "no_python"
NO_SPACE = "disk_space"
PIP_FAILED = "pip_failed"
CANCELLED = "cancelled"
BUSY = "busy"
BROKEN = "broken"

# A venv's Python answers with the interpreter it was made from, so the new environment never
# depends on another environment that may be deleted.
_PROBE = ("import sys, json, venv, ensurepip; base = getattr(sys, '_base_executable', '') "
          "if sys.prefix != sys.base_prefix else ''; print(json.dumps({'version': list(sys.version_info[:3]), "
          "'executable': base or sys.executable, 'frozen': bool(getattr(sys, 'frozen', False))}))")


@dataclass(frozen=True)
class BasePython:
    path: str
    version: tuple[int, int, int]
    source: str  # "ATELIER_ENGINE_PYTHON", "uv", "PATH"


def _probe_python(path: str, timeout: float = 30.0) -> tuple[BasePython | None, str]:
    from engines.envs.health import clean_env

    try:
        run = subprocess.run([path, "-s", "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
                             env=clean_env(), encoding="utf-8", errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{path} could not be run ({exc})"
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        if "ensurepip" in run.stderr or "venv" in run.stderr:
            return None, f"{path} lacks the venv module ({last}); on Debian/Ubuntu install python3-venv"
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


def _uv_binary() -> str | None:
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # the "uv" package from PyPI, when the app ships it

        return find_uv_bin()
    except Exception:  # noqa: BLE001 - not shipped, or shipped without its binary
        return None


def _uv_python(uv: str, install_dir: Path, allow_download: bool, log: Callable[[str], None]) -> str | None:
    env = dict(os.environ)
    env["UV_PYTHON_INSTALL_DIR"] = str(install_dir)
    commands = [[uv, "python", "find", UV_PYTHON]]
    if allow_download:
        commands += [[uv, "python", "install", UV_PYTHON], [uv, "python", "find", UV_PYTHON]]
    for command in commands:
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env,
                                 encoding="utf-8", errors="replace")
        except (OSError, subprocess.TimeoutExpired) as exc:
            log(f"{' '.join(command[1:])}: {exc}")
            continue
        if run.returncode == 0 and command[2] == "find" and run.stdout.strip():
            return run.stdout.strip().splitlines()[-1]
        if run.returncode != 0:
            log(f"uv {' '.join(command[1:])} failed: {(run.stderr.strip().splitlines() or [''])[-1]}")
    return None


def find_base_python(uv_install_dir: Path, allow_download: bool, log: Callable[[str], None] = lambda _m: None
                     ) -> BasePython:
    """The interpreter to build the environment on (see the module docstring), or EngineError(NO_PYTHON)."""
    rejected: list[str] = []
    explicit = os.environ.get(PYTHON_ENV, "").strip()
    if explicit:
        found, why = _probe_python(explicit)
        if found is not None and not _is_this_app(found.path):
            return BasePython(found.path, found.version, PYTHON_ENV)
        raise EngineError(NO_PYTHON, f"{PYTHON_ENV} is set to {explicit}, which is not a usable Python "
                                     f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}+: {why or 'it is this app itself'}.")
    uv = _uv_binary()
    if uv:
        path = _uv_python(uv, uv_install_dir, allow_download, log)
        if path:
            found, why = _probe_python(path)
            if found is not None and not _is_this_app(found.path):
                return BasePython(found.path, found.version, "uv")
            rejected.append(why)
    seen: set[str] = set()
    for name in PATH_CANDIDATES:
        path = shutil.which(name)
        if not path or path in seen or _is_this_app(path):
            continue
        seen.add(path)
        found, why = _probe_python(path)
        if found is not None and not _is_this_app(found.path):
            return BasePython(found.path, found.version, "PATH")
        rejected.append(why)
    detail = f" (tried: {'; '.join(r for r in rejected if r)})" if any(rejected) else ""
    raise EngineError(
        NO_PYTHON,
        "No Python to build the image engine with was found. Install Python 3.11 (from python.org, or on "
        "Debian/Ubuntu: sudo apt install python3.11 python3.11-venv), or install 'uv', or set "
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
                  on_start: Callable[[subprocess.Popen], None] | None = None, keep: int = 400) -> RunResult:
    """Run *command*, feeding each output line (stdout and stderr) to *on_line*; stop it on *cancel*."""
    popen_kwargs: dict = {}
    if sys.platform == "win32":
        popen_kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        popen_kwargs["start_new_session"] = True  # its own group: a cancel stops pip's helpers too
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


# ---- pip's output ----------------------------------------------------------------------

_UNITS = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_COLLECTING = re.compile(r"^Collecting (\S+)")
_DOWNLOADING = re.compile(r"^\s*Downloading (\S+)(?: \(([\d.]+) (B|kB|KB|MB|GB)\))?")
_CACHED = re.compile(r"^\s*Using cached (\S+)")
_PROCESSING = re.compile(r"^\s*Processing (\S+)")
_RAW = re.compile(r"^Progress (\d+) of (\d+)")
_INSTALLING = re.compile(r"^Installing collected packages: (.*)")
_SUCCESS = re.compile(r"^Successfully installed (.*)")
_SATISFIED = re.compile(r"^Requirement already satisfied: (\S+)")


def _basename(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1].split("#", 1)[0]


class PipProgress:
    """Progress of one ``pip install`` run, from its output lines.

    ``fraction`` runs from 0 to 1: downloads take the first 80 % (bytes
    against the estimate, or packages against the expected count when pip
    prints no sizes), installing the rest.
    """

    def __init__(self, expected_bytes: int, expected_packages: int) -> None:
        self.expected_bytes = max(expected_bytes, 1)
        self.expected_packages = max(expected_packages, 1)
        self.collected: list[str] = []
        self.satisfied = 0
        self.bytes_done = 0  # finished downloads
        self.current_bytes = 0  # the download in progress (raw progress bar)
        self.current_size = 0
        self.installing: list[str] = []
        self.installed = False
        self.errors: list[str] = []
        self.message = "Starting pip…"
        self._fraction = 0.0

    @property
    def packages_total(self) -> int:
        return len(self.installing) if self.installing else len(self.collected) + self.satisfied

    @property
    def packages_done(self) -> int:
        if self.installed:
            return self.packages_total
        if self.installing:
            return 0
        return max(len(self.collected) - 1, 0) + self.satisfied

    @property
    def bytes_seen(self) -> int:
        return self.bytes_done + self.current_bytes

    @property
    def fraction(self) -> float:
        if self.installed:
            value = 1.0
        elif self.installing:
            value = 0.85
        else:
            by_bytes = self.bytes_seen / self.expected_bytes
            by_count = (len(self.collected) + self.satisfied) / self.expected_packages
            value = 0.8 * min(max(by_bytes, by_count), 1.0)
        self._fraction = max(self._fraction, value)  # never goes back
        return self._fraction

    def _finish_download(self) -> None:
        self.bytes_done += max(self.current_size, self.current_bytes)
        self.current_bytes = self.current_size = 0

    def feed(self, line: str) -> bool:
        """Take one line; True when it changed what the user should see."""
        if m := _RAW.match(line):
            self.current_bytes = int(m.group(1))
            self.current_size = max(self.current_size, int(m.group(2)))
            return True
        if m := _COLLECTING.match(line):
            self._finish_download()
            self.collected.append(m.group(1))
            self.message = f"Resolving {m.group(1)}"
            return True
        if m := _DOWNLOADING.match(line):
            self._finish_download()
            name = _basename(m.group(1))
            if m.group(2):
                self.current_size = int(float(m.group(2)) * _UNITS[m.group(3)])
                self.message = f"Downloading {name} ({m.group(2)} {m.group(3)})"
            else:
                self.message = f"Downloading {name}"
            return True
        if m := _CACHED.match(line):
            self._finish_download()
            self.message = f"Using the cached {_basename(m.group(1))}"
            return True
        if m := _PROCESSING.match(line):
            self._finish_download()
            self.message = f"Unpacking {_basename(m.group(1))}"
            return True
        if m := _SATISFIED.match(line):
            self.satisfied += 1
            self.message = f"Already installed: {m.group(1)}"
            return True
        if m := _INSTALLING.match(line):
            self._finish_download()
            self.installing = [p.strip() for p in m.group(1).split(",") if p.strip()]
            big = " (PyTorch is large: this takes a while)" if "torch" in self.installing else ""
            self.message = f"Installing {len(self.installing)} packages{big}"
            return True
        if _SUCCESS.match(line):
            self.installed = True
            self.message = "Installed"
            return True
        if line.startswith("ERROR:"):
            self.errors.append(line)
        return False


def pip_error(lines: list[str], wheel_dir: str | None = None) -> str:
    """The last meaningful error of a failed pip run, in words."""
    errors = [line for line in lines if line.startswith("ERROR:")]
    text = ""
    if errors:
        text = errors[-1][len("ERROR:"):].strip()
        if text.startswith("No matching distribution") and len(errors) > 1:
            text = errors[-2][len("ERROR:"):].strip() + " " + text
    else:
        meaningful = [line.strip() for line in lines if line.strip() and not line.startswith(("WARNING", "  "))]
        text = meaningful[-1] if meaningful else "pip stopped without saying why"
    if "No space left on device" in text or "Errno 28" in text:
        return f"The disk is full: pip could not write the packages ({text[:300]})."
    if wheel_dir and ("No matching distribution" in text or "Could not find a version" in text):
        return f"The folder of wheels {wheel_dir} lacks a package: {text[:400]}"
    return text[:500]


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
    """``install.json``: read leniently, written atomically (a crash leaves the old or the new one)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.path)

    def update(self, **changes) -> dict:
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
    """Bytes *path* takes on disk (allocated blocks where the OS reports them), symlinks not followed."""
    total = 0
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


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
