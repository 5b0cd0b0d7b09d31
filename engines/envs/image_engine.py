"""The image engine on demand: a private Python environment with PyTorch, diffusers and ONNX Runtime.

The base app ships without torch. :class:`ImageEngineEnv` manages one
virtual environment under ``<data>/engines/image``::

    env/            the virtual environment (its own Python, built on a base Python)
    python/         uv's private CPython, when uv provided the base Python
    cache/          uv's cache for this install: what was downloaded and unpacked so far
    install.json    the last install: state, plan, the build uv chose, times, error, versions, size
    install.log     uv's full output

An install finds a base Python (:func:`engines.envs.installer.find_base_python`),
creates the environment with ``uv venv``, asks uv which PyTorch build it
will install (a dry run: the build is shown and recorded), installs
everything with one ``uv pip install`` (:mod:`engines.envs.uv`), and
imports it all with the new Python before it says "ready". Every step is
recorded in ``install.json`` first, so a failed, cancelled or killed
install is found on the next start as "broken" and can be resumed (uv
reuses what its cache already holds) or started over. Once the engine is
ready the cache is deleted: the environment's files were hard links into
it, so they stay, and the disk holds one copy. A damaged environment is
found by :meth:`ImageEngineEnv.check` and fixed by :meth:`ImageEngineEnv.repair`.

A development checkout whose interpreter already has torch and diffusers
(``make run``) uses that interpreter: the state is "host_has_it" and
nothing is installed. The engine host for images then runs as before;
otherwise it runs under the environment's Python (:func:`image_host_launch`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shlex
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from engines.byte_sizes import format_bytes
from engines.envs.health import clean_env, env_python, import_check, quick_problem
from engines.envs.installer import (
    BROKEN, BUSY, CANCELLED, INSTALL_FAILED, NO_SPACE, StateFile, find_base_python, now_iso, process_alive,
    process_start_time, remove_tree, run_streaming, tree_size,
)  # fmt: skip
from engines.envs.plan import InstallPlan, make_plan
from engines.envs.uv import (
    UvProgress, install_command, parse_resolution, torch_build, uv_binary, uv_env, uv_error, venv_command,
)  # fmt: skip
from engines.errors import EngineError, ErrorKind

log = logging.getLogger(__name__)

ENV_MODE = "ATELIER_IMAGE_ENGINE_ENV"  # "private": ignore torch in this interpreter (test the install from a checkout)
State = Literal["not_installed", "installing", "ready", "broken", "host_has_it"]
# Where each step sits on the overall progress bar.
STEPS = {"python": (0.0, 0.02), "venv": (0.02, 0.04), "resolve": (0.04, 0.07), "install": (0.07, 0.95),
         "verify": (0.95, 1.0)}
STEP_WORDS = {"python": "looking for a Python", "venv": "creating the environment",
              "resolve": "choosing the PyTorch build", "install": "installing PyTorch, diffusers and ONNX Runtime",
              "verify": "checking the engine"}

_active_lock = threading.Lock()
_active: set[str] = set()  # roots with an operation running in this process


@dataclass(frozen=True)
class EnvStatus:
    state: State
    python: Path | None = None
    size_bytes: int = 0
    torch_variant: str | None = None
    reason: str = ""  # why it is not ready, in words
    resumable: bool = False  # an unfinished install that running uv again can complete
    plan: InstallPlan | None = None  # the plan of the last install
    versions: dict = field(default_factory=dict)


@dataclass(frozen=True)
class InstallProgress:
    step: str  # "python", "venv", "resolve", "install", "verify", "done"
    message: str
    fraction: float | None  # 0..1 over the whole install; None: no idea yet
    packages_done: int = 0
    packages_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0


def image_engine_root(paths) -> Path:
    return Path(paths.data) / "engines" / "image"


def host_has_image_engine() -> bool:
    """A development interpreter that can import torch and diffusers itself (found without importing)."""
    if getattr(sys, "frozen", False) or os.environ.get(ENV_MODE, "").strip().lower() == "private":
        return False
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("torch", "diffusers"))
    except (ImportError, ValueError):
        return False


def _variant_of(versions: dict, fallback: str | None) -> str | None:
    if versions.get("cuda"):
        return "cu" + re.sub(r"\D", "", str(versions["cuda"]))[:3]
    if versions.get("hip"):
        return "rocm" + ".".join(str(versions["hip"]).split(".")[:2])
    match = re.search(r"\+(\w+)", str(versions.get("torch", "")))
    return match.group(1) if match else fallback


def _end_reason(state: str, error: str | None) -> str:
    if state == "cancelled":
        return "The last install was cancelled before it finished."
    return f"The last install failed: {error or 'no reason was recorded'}"


class ImageEngineEnv:
    """The private image-engine environment under *root* (see the module docstring)."""

    def __init__(self, root: Path, use_host: bool | None = None) -> None:
        self.root = Path(root)
        self.env_dir = self.root / "env"
        self.python_dir = self.root / "python"
        self.cache_dir = self.root / "cache"
        self.log_path = self.root / "install.log"
        self._state = StateFile(self.root / "install.json")
        self._use_host = use_host
        self._unrecorded_end: str = ""  # how the last install ended, when install.json could not say it

    @property
    def python(self) -> Path:
        return env_python(self.env_dir)

    def uses_host(self) -> bool:
        return host_has_image_engine() if self._use_host is None else self._use_host

    # ---- looking -----------------------------------------------------------------------

    def status(self) -> EnvStatus:
        """Where the engine stands, from files only (fast enough for start-up)."""
        if self.uses_host():
            return EnvStatus("host_has_it", Path(sys.executable), reason="This Python already has PyTorch and "
                             "diffusers (a development checkout): nothing to install.")
        data = self._state.read()
        plan = InstallPlan.from_dict(data["plan"]) if isinstance(data.get("plan"), dict) else None
        versions = data.get("versions") or {}
        exists = self.env_dir.exists()
        common = dict(python=self.python if self.python.exists() else None, size_bytes=int(data.get("size_bytes") or 0),
                      torch_variant=_variant_of(versions, data.get("torch_build") or (plan.kind if plan else None)),
                      plan=plan, versions=versions)
        state = data.get("state")
        if state == "installing":
            ours = data.get("pid") == os.getpid()
            if (ours and self._busy()) or (not ours and process_alive(data.get("pid"), data.get("pid_started"))):
                return EnvStatus("installing", **common, reason="The image engine is being installed.")
            if ours and self._unrecorded_end:
                return EnvStatus("broken", **common, resumable=True, reason=self._unrecorded_end)
            return EnvStatus("broken", **common, resumable=True,
                             reason=f"The last install was interrupted while "
                                    f"{STEP_WORDS.get(data.get('step') or '', 'installing')} "
                                    "(the app closed or was stopped). Resume it, or start over.")
        if state in ("failed", "cancelled"):
            why = _end_reason(state, data.get("error"))
            return EnvStatus("broken" if exists else "not_installed", **common, resumable=exists, reason=why)
        if state in ("ready", "damaged"):
            problem = quick_problem(self.env_dir) or (data.get("error") if state == "damaged" else "")
            if problem:
                return EnvStatus("broken", **common, reason=f"The image engine is damaged: {problem}. "
                                                            "Repair it to install it again.")
            return EnvStatus("ready", **common)
        if exists:
            return EnvStatus("broken", **common, resumable=True,
                             reason="An unfinished image engine was found. Resume the install, or start over.")
        return EnvStatus("not_installed", **common)

    def check(self) -> EnvStatus:
        """:meth:`status`, plus a real import of the engine with the environment's Python."""
        status = self.status()
        if status.state in ("host_has_it", "not_installed", "installing") or status.resumable:
            return status
        from engines.host.standalone import engines_source_root

        versions, reason = import_check(self.env_dir, engines_source_root())
        data = self._state.read()
        if versions is None:
            self._state.update(state="damaged", error=reason)
            return self.status()
        if data.get("state") in ("ready", "damaged"):
            self._state.update(state="ready", error=None, versions=versions)
        return self.status()

    def plan(self, hardware=None, wheel_dir: str | os.PathLike | None = None, backend: str | None = None
             ) -> InstallPlan:
        """What an install would do on *hardware* (probed when None); see :func:`engines.envs.plan.make_plan`."""
        if hardware is None:
            from engines.machine.hardware import probe

            hardware = probe()
        return make_plan(hardware, wheel_dir=wheel_dir, backend=backend)

    def host_launch(self) -> dict | None:
        """``EngineHost`` arguments for the image host: None to run it in this interpreter."""
        if self.uses_host() or self.status().state != "ready":
            return None
        from engines.host.standalone import engines_source_root

        source = engines_source_root()
        if source is None:
            log.warning("the engines source tree is not on disk: the private image engine cannot be used")
            return None
        return {"python": str(self.python), "pythonpath": [str(source)]}

    # ---- changing ----------------------------------------------------------------------

    def install(self, plan: InstallPlan, progress: Callable[[InstallProgress], None] | None = None,
                cancel: threading.Event | None = None) -> EnvStatus:
        """Install (or resume) the environment for *plan*; the ready status, or EngineError."""
        with self._exclusive():
            return self._install(plan, progress or (lambda _p: None), cancel or threading.Event())

    def repair(self, plan: InstallPlan | None = None, progress: Callable[[InstallProgress], None] | None = None,
               cancel: threading.Event | None = None) -> EnvStatus:
        """Delete the environment (and uv's cache, whose files it shares) and install again (the last plan unless
        *plan* is given)."""
        with self._exclusive():
            plan = plan or self.status().plan or self.plan()
            remove_tree(self.env_dir)
            remove_tree(self.cache_dir)
            return self._install(plan, progress or (lambda _p: None), cancel or threading.Event())

    def remove(self) -> int:
        """Delete the environment and everything under the root; the bytes given back."""
        with self._exclusive():
            before = tree_size(self.root)
            for path in (self.env_dir, self.cache_dir, self.python_dir):
                remove_tree(path)
            self._state.remove()
            remove_tree(self.root)
            return max(before - tree_size(self.root), 0)

    # ---- the install -------------------------------------------------------------------

    def _install(self, plan: InstallPlan, progress: Callable[[InstallProgress], None], cancel: threading.Event
                 ) -> EnvStatus:
        if plan.wheel_dir:
            if not Path(plan.wheel_dir).is_dir():
                raise EngineError(ErrorKind.BAD_INPUT, f"The folder of wheels {plan.wheel_dir} does not exist.")
        else:
            from engines.network import require_network

            require_network("installing the image engine")
        self._check_disk(plan)
        uv = uv_binary()
        self.root.mkdir(parents=True, exist_ok=True)
        self._state.write({"state": "installing", "pid": os.getpid(), "pid_started": process_start_time(os.getpid()),
                           "plan": plan.to_dict(), "started_at": now_iso(), "finished_at": None, "error": None,
                           "step": "python"})
        with InstallLog(self.log_path) as logfile:
            logfile.write(f"\n==== install {now_iso()}: {plan.summary()}\n")
            try:
                python = self._make_venv(uv, plan, progress, cancel, logfile)
                self._resolve(uv, python, plan, progress, cancel, logfile)
                self._install_packages(uv, python, plan, progress, cancel, logfile)
                self._step("verify", progress, "Checking that the engine loads…", 0.0)
                from engines.host.standalone import engines_source_root

                versions, reason = import_check(self.env_dir, engines_source_root())
                if versions is None:
                    raise EngineError(BROKEN, f"The packages installed, but the engine does not load: {reason}")
                remove_tree(self.cache_dir)  # the environment holds the files now (hard links or copies)
                size = tree_size(self.root)
                self._state.update(state="ready", finished_at=now_iso(), error=None, versions=versions,
                                   size_bytes=size, torch_variant=_variant_of(versions, plan.kind))
                progress(InstallProgress("done", f"Installed: {format_bytes(size)}", 1.0))
                logfile.write(f"==== ready {now_iso()}: {versions}\n")
                return self.status()
            except EngineError as exc:
                cancelled = cancel.is_set()
                message = "The install was cancelled." if cancelled else exc.message
                self._record_end(state="cancelled" if cancelled else "failed", error=None if cancelled else message)
                logfile.write(f"==== {'cancelled' if cancelled else 'failed'} {now_iso()}: {message}\n")
                if cancelled:
                    raise EngineError(CANCELLED, "The install was cancelled. Resume it later, or remove it.") from exc
                raise
            except Exception as exc:
                self._record_end(state="failed", error=f"{type(exc).__name__}: {exc}")
                logfile.write(f"==== failed {now_iso()}: {exc!r}\n")
                raise EngineError(ErrorKind.INTERNAL, f"The install failed unexpectedly ({type(exc).__name__}: "
                                                      f"{exc}). Details are in {self.log_path}.") from exc

    def _uv_env(self, plan: InstallPlan) -> dict[str, str]:
        from engines.network import network_allowed

        offline = bool(plan.wheel_dir) or not network_allowed()
        return uv_env(clean_env(), self.cache_dir, self.python_dir, offline=offline)

    def _make_venv(self, uv: str, plan, progress, cancel, logfile) -> Path:
        python = self.python
        if python.exists() and not quick_problem(self.env_dir).startswith(("its Python", "the Python")):
            if self._python_runs(python):
                self._step("venv", progress, "Reusing the environment of the earlier install", 1.0)
                return python
        remove_tree(self.env_dir)
        self._step("python", progress, "Looking for a Python to build the engine on…", 0.0)
        from engines.network import network_allowed

        base = find_base_python(uv, self._uv_env(plan), network_allowed() and not plan.wheel_dir,
                                lambda m: logfile.write(m + "\n"))
        logfile.write(f"base Python: {base.path} ({'.'.join(map(str, base.version))}, from {base.source})\n")
        self._state.update(step="venv", base_python=base.path)
        version = f"{base.version[0]}.{base.version[1]}"
        self._step("venv", progress, f"Creating the environment with Python {version}…", 0.0)
        result = self._run(venv_command(uv, base.path, self.env_dir), plan, logfile, cancel)
        if result.returncode != 0 or not python.exists():
            self._raise_if_cancelled(cancel)
            raise EngineError(BROKEN, f"Could not create the environment with {base.path}: {uv_error(result.lines)}")
        return python

    def _resolve(self, uv: str, python: Path, plan: InstallPlan, progress, cancel, logfile) -> None:
        """Ask uv what it will install (no download): the PyTorch build it chose is shown and recorded."""
        self._state.update(step="resolve")
        self._step("resolve", progress, "Choosing the PyTorch build for this computer…", 0.0)
        output: list[str] = []
        result = self._run(install_command(uv, python, plan, dry_run=True), plan, logfile, cancel, output.append)
        self._raise_if_cancelled(cancel)
        if result.returncode != 0:
            raise self._failed(plan, result)
        resolution = parse_resolution(output)
        if resolution.torch_version is None:
            self._step("resolve", progress, "PyTorch is already installed; installing the rest…", 1.0)
            return
        build = torch_build(resolution.torch_version)
        self._state.update(torch_build=build or None, torch_version=resolution.torch_version)
        self._step("resolve", progress, f"uv chose PyTorch {resolution.torch_version} for this computer "
                                        f"({resolution.changes} packages to install)", 1.0)

    def _install_packages(self, uv: str, python: Path, plan: InstallPlan, progress, cancel, logfile) -> None:
        self._state.update(step="install")
        tracker = UvProgress(plan.disk_bytes_estimate, tree_size(self.cache_dir))
        self._step("install", progress, tracker.message, 0.0, tracker)

        def on_line(line: str) -> None:
            if tracker.feed(line):
                self._step("install", progress, tracker.message, tracker.fraction, tracker)

        next_walk = [0.0]

        def on_tick() -> None:  # uv unpacks into its cache as the bytes arrive: its size is the progress
            if not tracker.packages_total or tracker.prepared or time.monotonic() < next_walk[0]:
                return
            started = time.monotonic()
            tracker.set_cache_bytes(tree_size(self.cache_dir))
            # Walking tens of thousands of files costs a fraction of a second: at most a tenth of the time.
            next_walk[0] = time.monotonic() + 9 * (time.monotonic() - started)
            self._step("install", progress, tracker.message, tracker.fraction, tracker)

        result = self._run(install_command(uv, python, plan), plan, logfile, cancel, on_line, on_tick)
        self._raise_if_cancelled(cancel)
        if result.returncode != 0:
            raise self._failed(plan, result)

    # ---- helpers -----------------------------------------------------------------------

    def _record_end(self, **changes) -> None:
        """Record how a failed install ended; a disk too full even for install.json must not hide its error.

        When the file cannot be written, this object remembers the end for :meth:`status` (the next
        start of the app finds the install as interrupted, which it then is).
        """
        self._unrecorded_end = ""
        try:
            self._state.update(finished_at=now_iso(), **changes)
        except OSError as exc:
            log.warning("could not record the end of the install in %s: %s", self._state.path, exc)
            self._unrecorded_end = _end_reason(changes["state"], changes.get("error"))

    def _run(self, command, plan, logfile, cancel, on_line: Callable[[str], None] | None = None,
             on_tick: Callable[[], None] | None = None):
        logfile.write("$ " + shlex.join(command) + "\n")

        def line(text: str) -> None:
            logfile.write(text + "\n")
            if on_line is not None:
                on_line(text)

        def started(proc) -> None:
            self._state.update(worker_pid=proc.pid, worker_started=process_start_time(proc.pid))

        return run_streaming(command, line, cancel, env=self._uv_env(plan), cwd=str(self.root), on_start=started,
                             on_tick=on_tick)

    @staticmethod
    def _python_runs(python: Path) -> bool:
        import subprocess

        try:
            return subprocess.run([str(python), "-c", "import sys"], capture_output=True, timeout=120,
                                  env=clean_env()).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    @staticmethod
    def _failed(plan: InstallPlan, result) -> EngineError:
        return EngineError(INSTALL_FAILED, f"Installing {plan.label} failed: {uv_error(result.lines, plan.wheel_dir)}")

    @staticmethod
    def _raise_if_cancelled(cancel: threading.Event) -> None:
        if cancel.is_set():
            raise EngineError(CANCELLED, "The install was cancelled.")

    @staticmethod
    def _step(step: str, progress, message: str, within: float | None, tracker: UvProgress | None = None) -> None:
        low, high = STEPS[step]
        fraction = None if within is None else low + (high - low) * min(max(within, 0.0), 1.0)
        if tracker is None:
            progress(InstallProgress(step, message, fraction))
        else:
            progress(InstallProgress(step, message, fraction, bytes_done=tracker.bytes_done,
                                     bytes_total=tracker.expected_bytes))

    def free_bytes(self) -> int:
        target = self.root
        while not target.exists() and target.parent != target:
            target = target.parent
        return shutil.disk_usage(target).free

    def _check_disk(self, plan: InstallPlan) -> None:
        """uv unpacks while it downloads and links from its cache: the disk needs the unpacked size once."""
        have = tree_size(self.root) if self.root.exists() else 0
        need = max(plan.disk_bytes_estimate - have, 0)
        free = self.free_bytes()
        if need > free:
            raise EngineError(NO_SPACE, f"Not enough disk space for the image engine: it needs about "
                                        f"{format_bytes(need)} on the drive of {self.root}, and {format_bytes(free)} "
                                        "is free. Free some space and try again.")

    def _busy(self) -> bool:
        with _active_lock:
            return os.path.abspath(self.root) in _active

    @contextmanager
    def _exclusive(self):
        key = os.path.abspath(self.root)
        with _active_lock:
            if key in _active:
                raise EngineError(BUSY, "The image engine is being installed or removed already.")
            _active.add(key)
        try:
            data = self._state.read()
            if data.get("state") == "installing":
                if process_alive(data.get("pid"), data.get("pid_started")) and data.get("pid") != os.getpid():
                    raise EngineError(BUSY, f"Another Atelier (process {data.get('pid')}) is installing the image "
                                            "engine. Wait for it to finish.")
                self._stop_orphan(data)
            yield
        finally:
            with _active_lock:
                _active.discard(key)

    @staticmethod
    def _stop_orphan(data: dict) -> None:
        """A uv left running by an app that died mid-install: stop it (and its helpers) before starting again."""
        pid = data.get("worker_pid")
        if not pid or not process_alive(pid, data.get("worker_started")):
            return
        import psutil

        try:
            proc = psutil.Process(int(pid))
            procs = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return
        for item in procs:
            try:
                item.terminate()
            except psutil.Error:
                pass
        _gone, alive = psutil.wait_procs(procs, timeout=5)
        for item in alive:
            try:
                item.kill()
            except psutil.Error:
                pass


class InstallLog:
    """``install.log``, appended line by line; a full disk loses log lines, never the install's own error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = None

    def __enter__(self) -> "InstallLog":
        try:
            self._file = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)
        return self

    def write(self, text: str) -> None:
        if self._file is not None:
            try:
                self._file.write(text)
                self._file.flush()
            except OSError:
                pass

    def __exit__(self, *_exc) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass


def image_host_launch(workspace) -> dict | None:
    """The image engine host's interpreter for *workspace*: ``dict(python=…, pythonpath=…)``; None: this one."""
    try:
        return ImageEngineEnv(image_engine_root(workspace.paths)).host_launch()
    except Exception as exc:  # noqa: BLE001 - a broken state file must not stop the app
        log.warning("could not read the image engine's state: %s", exc)
        return None
