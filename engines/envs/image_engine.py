"""The image engine on demand: a private Python environment with PyTorch, diffusers and ONNX Runtime.

The base app ships without torch. :class:`ImageEngineEnv` manages one
virtual environment under ``<data>/engines/image``::

    env/            the virtual environment (its own Python, built on a base Python)
    python/         uv's private CPython, when uv provided the base Python
    install.json    the last install: state, plan, times, error, versions, size
    install.log     pip's full output

An install finds a base Python (:func:`engines.envs.installer.find_base_python`),
creates the environment, upgrades pip, installs the PyTorch build the plan
chose (:mod:`engines.envs.plan`), then the rest, and imports everything with
the new Python before it says "ready". Every step is recorded in
``install.json`` first, so a failed, cancelled or killed install is found
on the next start as "broken" and can be resumed (pip skips what is there)
or started over; a damaged environment is found by :meth:`ImageEngineEnv.check`
and fixed by :meth:`ImageEngineEnv.repair`.

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
import shutil
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from engines.envs.health import env_python, import_check, quick_problem
from engines.envs.installer import (
    BUSY, CANCELLED, NO_SPACE, PIP_FAILED, BROKEN, PipProgress, StateFile, find_base_python, now_iso, pip_error,
    process_alive, process_start_time, remove_tree, run_streaming, tree_size,
)  # fmt: skip
from engines.envs.plan import InstallPlan, format_size, make_plan
from engines.errors import EngineError, ErrorKind

log = logging.getLogger(__name__)

ENV_MODE = "ATELIER_IMAGE_ENGINE_ENV"  # "private": ignore torch in this interpreter (test the install from a checkout)
State = Literal["not_installed", "installing", "ready", "broken", "host_has_it"]
# Where each step sits on the overall progress bar.
STEPS = {"python": (0.0, 0.02), "venv": (0.02, 0.05), "pip": (0.05, 0.07), "torch": (0.07, 0.70),
         "packages": (0.70, 0.95), "verify": (0.95, 1.0)}
TORCH_SHARE = {"cpu": 0.65, "mps": 0.3, "cuda": 0.85, "rocm": 0.95}  # of the download, for the progress bar

_active_lock = threading.Lock()
_active: set[str] = set()  # roots with an operation running in this process


@dataclass(frozen=True)
class EnvStatus:
    state: State
    python: Path | None = None
    size_bytes: int = 0
    torch_variant: str | None = None
    reason: str = ""  # why it is not ready, in words
    resumable: bool = False  # an unfinished install that running pip again can complete
    plan: InstallPlan | None = None  # the plan of the last install
    versions: dict = field(default_factory=dict)


@dataclass(frozen=True)
class InstallProgress:
    step: str  # "python", "venv", "pip", "torch", "packages", "verify", "done"
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


class ImageEngineEnv:
    """The private image-engine environment under *root* (see the module docstring)."""

    def __init__(self, root: Path, use_host: bool | None = None) -> None:
        self.root = Path(root)
        self.env_dir = self.root / "env"
        self.uv_dir = self.root / "python"
        self.log_path = self.root / "install.log"
        self._state = StateFile(self.root / "install.json")
        self._use_host = use_host

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
                      torch_variant=_variant_of(versions, plan.variant if plan else None), plan=plan, versions=versions)
        state = data.get("state")
        if state == "installing":
            ours = data.get("pid") == os.getpid()
            if (ours and self._busy()) or (not ours and process_alive(data.get("pid"), data.get("pid_started"))):
                return EnvStatus("installing", **common, reason="The image engine is being installed.")
            return EnvStatus("broken", **common, resumable=True,
                             reason=f"The last install was interrupted while {self._step_words(data.get('step'))} "
                                    "(the app closed or was stopped). Resume it, or start over.")
        if state in ("failed", "cancelled"):
            why = ("The last install was cancelled before it finished." if state == "cancelled"
                   else f"The last install failed: {data.get('error') or 'no reason was recorded'}")
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

    def plan(self, hardware=None, wheel_dir: str | os.PathLike | None = None, **probes) -> InstallPlan:
        """What an install would do on *hardware* (probed when None)."""
        if hardware is None:
            from engines.library.hardware import probe

            hardware = probe()
        return make_plan(hardware, wheel_dir=wheel_dir, **probes)

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
        """Delete the environment and install it again (the last plan unless *plan* is given)."""
        with self._exclusive():
            plan = plan or self.status().plan or self.plan()
            remove_tree(self.env_dir)
            return self._install(plan, progress or (lambda _p: None), cancel or threading.Event())

    def remove(self) -> int:
        """Delete the environment and everything under the root; the bytes given back."""
        with self._exclusive():
            before = tree_size(self.root)
            for path in (self.env_dir, self.uv_dir):
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
            from engines.library.network import require_network

            require_network("installing the image engine")
        self._check_disk(plan)
        self.root.mkdir(parents=True, exist_ok=True)
        self._state.write({"state": "installing", "pid": os.getpid(), "pid_started": process_start_time(os.getpid()),
                           "plan": plan.to_dict(), "started_at": now_iso(), "finished_at": None, "error": None,
                           "step": "python"})
        with open(self.log_path, "a", encoding="utf-8") as logfile:
            logfile.write(f"\n==== install {now_iso()}: {plan.summary()}\n")
            try:
                python = self._make_venv(plan, progress, cancel, logfile)
                self._pip_steps(python, plan, progress, cancel, logfile)
                self._step("verify", progress, "Checking that the engine loads…", 0.0)
                from engines.host.standalone import engines_source_root

                versions, reason = import_check(self.env_dir, engines_source_root())
                if versions is None:
                    raise EngineError(BROKEN, f"The packages installed, but the engine does not load: {reason}")
                size = tree_size(self.root)
                self._state.update(state="ready", finished_at=now_iso(), error=None, versions=versions,
                                   size_bytes=size, torch_variant=_variant_of(versions, plan.variant))
                progress(InstallProgress("done", f"Installed: {format_size(size)}", 1.0))
                logfile.write(f"==== ready {now_iso()}: {versions}\n")
                return self.status()
            except EngineError as exc:
                cancelled = cancel.is_set()
                message = "The install was cancelled." if cancelled else exc.message
                self._state.update(state="cancelled" if cancelled else "failed", finished_at=now_iso(),
                                   error=None if cancelled else message)
                logfile.write(f"==== {'cancelled' if cancelled else 'failed'} {now_iso()}: {message}\n")
                if cancelled:
                    raise EngineError(CANCELLED, "The install was cancelled. Resume it later, or remove it.") from exc
                raise
            except Exception as exc:
                self._state.update(state="failed", finished_at=now_iso(), error=f"{type(exc).__name__}: {exc}")
                logfile.write(f"==== failed {now_iso()}: {exc!r}\n")
                raise EngineError(ErrorKind.INTERNAL, f"The install failed unexpectedly ({type(exc).__name__}: "
                                                      f"{exc}). Details are in {self.log_path}.") from exc

    def _make_venv(self, plan, progress, cancel, logfile) -> Path:
        python = self.python
        if python.exists() and not quick_problem(self.env_dir).startswith(("its Python", "the Python")):
            if self._python_runs(python):
                self._step("venv", progress, "Reusing the environment of the earlier install", 1.0)
                return python
        remove_tree(self.env_dir)
        self._step("python", progress, "Looking for a Python to build the engine on…", 0.0)
        from engines.library.network import network_allowed

        base = find_base_python(self.uv_dir, network_allowed() and not plan.wheel_dir,
                                lambda m: logfile.write(m + "\n"))
        logfile.write(f"base Python: {base.path} ({'.'.join(map(str, base.version))}, from {base.source})\n")
        self._state.update(step="venv", base_python=base.path)
        self._step("venv", progress, f"Creating the environment with Python {base.version[0]}.{base.version[1]}…", 0.0)
        result = self._run([base.path, "-m", "venv", str(self.env_dir)], logfile, cancel)
        if result.returncode != 0 or not python.exists():
            self._raise_if_cancelled(cancel)
            last = (result.lines or ["no output"])[-1]
            raise EngineError(BROKEN, f"Could not create the environment with {base.path}: {last}")
        return python

    def _pip_steps(self, python: Path, plan: InstallPlan, progress, cancel, logfile) -> None:
        self._state.update(step="pip")
        self._step("pip", progress, "Updating pip…", 0.0)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        source = ["--no-index", "--find-links", plan.wheel_dir] if plan.wheel_dir else []
        if self._pip_version(python) < (24, 1):
            self._run(pip + source + ["--progress-bar", "off", "--upgrade", "pip>=24.1"], logfile, cancel)
            self._raise_if_cancelled(cancel)  # an old pip still works: only its progress is coarser
        bar = "raw" if self._pip_version(python) >= (24, 1) else "off"
        share = TORCH_SHARE.get(plan.kind, 0.7)
        torch_source = source or (["--index-url", plan.index_url] if plan.index_url else [])
        for step, packages, source_args, share_of_bytes, count in (
            ("torch", [plan.torch_requirement], torch_source, share, 10),
            ("packages", list(plan.other_packages), source, 1 - share, 45),
        ):
            self._state.update(step=step)
            tracker = PipProgress(int(plan.download_bytes_estimate * share_of_bytes), count)
            title = plan.label if step == "torch" else "diffusers, transformers and ONNX Runtime"
            self._step(step, progress, f"Installing {title}…", 0.0)

            def on_line(line: str, _t=tracker, _s=step) -> None:
                if _t.feed(line):
                    self._step(_s, progress, _t.message, _t.fraction, _t)

            result = self._run(pip + ["--progress-bar", bar] + source_args + packages, logfile, cancel, on_line)
            self._raise_if_cancelled(cancel)
            if result.returncode != 0:
                raise EngineError(PIP_FAILED, f"Installing {title} failed: {pip_error(result.lines, plan.wheel_dir)}")

    # ---- helpers -----------------------------------------------------------------------

    def _run(self, command, logfile, cancel, on_line: Callable[[str], None] | None = None):
        from engines.envs.health import clean_env

        logfile.write("$ " + " ".join(command) + "\n")
        logfile.flush()

        def line(text: str) -> None:
            logfile.write(text + "\n")
            if on_line is not None:
                on_line(text)

        def started(proc) -> None:
            self._state.update(worker_pid=proc.pid, worker_started=process_start_time(proc.pid))

        env = clean_env()
        env["PIP_NO_INPUT"] = "1"
        return run_streaming(command, line, cancel, env=env, cwd=str(self.root), on_start=started)

    @staticmethod
    def _python_runs(python: Path) -> bool:
        import subprocess

        from engines.envs.health import clean_env

        try:
            return subprocess.run([str(python), "-c", "import pip"], capture_output=True, timeout=120,
                                  env=clean_env()).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _pip_version(self, python: Path) -> tuple[int, ...]:
        from engines.envs.health import site_packages

        packages = site_packages(self.env_dir)
        found = sorted(packages.glob("pip-*.dist-info")) if packages else []
        match = re.match(r"pip-([\d.]+)\.dist-info", found[-1].name) if found else None
        return tuple(int(p) for p in match.group(1).split(".") if p) if match else (0,)

    @staticmethod
    def _raise_if_cancelled(cancel: threading.Event) -> None:
        if cancel.is_set():
            raise EngineError(CANCELLED, "The install was cancelled.")

    @staticmethod
    def _step(step: str, progress, message: str, within: float | None, tracker: PipProgress | None = None) -> None:
        low, high = STEPS[step]
        fraction = None if within is None else low + (high - low) * min(max(within, 0.0), 1.0)
        if tracker is None:
            progress(InstallProgress(step, message, fraction))
        else:
            progress(InstallProgress(step, message, fraction, tracker.packages_done, tracker.packages_total,
                                     tracker.bytes_seen, tracker.expected_bytes))

    @staticmethod
    def _step_words(step: str | None) -> str:
        return {"python": "looking for a Python", "venv": "creating the environment", "pip": "updating pip",
                "torch": "installing PyTorch", "packages": "installing diffusers and ONNX Runtime",
                "verify": "checking the engine"}.get(step or "", "installing")

    def free_bytes(self) -> int:
        target = self.root
        while not target.exists() and target.parent != target:
            target = target.parent
        return shutil.disk_usage(target).free

    def _check_disk(self, plan: InstallPlan) -> None:
        have = tree_size(self.env_dir) if self.env_dir.exists() else 0
        need = max(plan.disk_bytes_estimate - have, 0)
        if not plan.wheel_dir and need:
            need += plan.download_bytes_estimate  # pip keeps the wheels while it unpacks them
        free = self.free_bytes()
        if need > free:
            raise EngineError(NO_SPACE, f"Not enough disk space for the image engine: it needs about "
                                        f"{format_size(need)} on the drive of {self.root}, and {format_size(free)} "
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
        """A pip left running by an app that died mid-install: stop it (and its helpers) before starting again."""
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


def image_host_launch(workspace) -> dict | None:
    """The image engine host's interpreter for *workspace*: ``dict(python=…, pythonpath=…)``, or None for this one."""
    try:
        return ImageEngineEnv(image_engine_root(workspace.paths)).host_launch()
    except Exception as exc:  # noqa: BLE001 - a broken state file must not stop the app
        log.warning("could not read the image engine's state: %s", exc)
        return None
