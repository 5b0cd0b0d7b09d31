"""The image engine on demand: install plans, the private environment, and the host under another Python.

Fast tests cover the plan per hardware, the state machine of install.json,
pip's output, the error messages, and the engine host under a foreign
interpreter (this one, passed explicitly, so the Popen path runs in every
suite). The ``engine_install`` tests do a real install into a temporary
data folder whose path has spaces and non-ASCII letters (about 3-4 minutes:
torch 2.13.0 from /opt/wheels, the rest from the package index); they are
left out of the default run by pyproject's addopts: run them with
``pytest -m engine_install``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engines.api import ChatMessage, FinishedEvent, SamplingParams, TextLoadSpec, TextRequest, TokenEvent
from engines.envs import ImageEngineEnv, InstallPlan, engines_source_root, image_engine_root, make_plan
from engines.envs.installer import NO_PYTHON, NO_SPACE, PipProgress, StateFile, find_base_python, pip_error
from engines.envs.plan import INDEX_ENV, PACKAGES, TORCH_VERSION
from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.host import EngineHost
from engines.host.standalone import RequestCancels
from engines.library.hardware import CpuInfo, GpuInfo, HardwareReport, MemoryInfo
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[1]
ODD = ("Über Ordner", "ä b")  # a data folder with spaces and non-ASCII letters


def report(os_name="Linux 6.1", arch="x86_64", gpus=()) -> HardwareReport:
    return HardwareReport(os_name, "3.11.7", CpuInfo("Test CPU", arch, 4, 8, ["AVX2"]),
                          MemoryInfo(16 * 2**30, 8 * 2**30), list(gpus))


def nvidia(driver: str) -> GpuInfo:
    return GpuInfo("NVIDIA GeForce RTX 4090", "NVIDIA", 24 * 2**30, 20 * 2**30, driver, "nvml")


@pytest.fixture(autouse=True)
def default_index(monkeypatch, request):
    if request.node.get_closest_marker("engine_install"):
        return  # the real install sets its own (module-wide) environment
    monkeypatch.delenv(INDEX_ENV, raising=False)
    monkeypatch.delenv("ATELIER_ENGINE_WHEELS", raising=False)


# ---- plans -----------------------------------------------------------------------------


def test_cpu_only_gets_the_cpu_build():
    plan = make_plan(report(), rocm_version=None)
    assert plan.variant == "cpu" and plan.label == "PyTorch 2.13 (CPU)"
    assert plan.index_url == "https://download.pytorch.org/whl/cpu"
    assert plan.packages[0] == f"torch=={TORCH_VERSION}" and "onnxruntime==1.31.1" in plan.packages
    assert plan.summary() == ("PyTorch 2.13 (CPU) + diffusers + ONNX Runtime: about 1.4 GB on disk, "
                              "300 MB to download")


@pytest.mark.parametrize("driver, variant", [("550.54.15", "cu124"), ("565.57.01", "cu126"), ("570.86.10", "cu128"),
                                             ("535.183.01", "cu121"), ("525.60.13", "cu118")])
def test_nvidia_driver_picks_the_newest_cuda_it_supports(driver, variant):
    plan = make_plan(report(gpus=[nvidia(driver)]))
    assert plan.variant == variant
    assert plan.index_url == f"https://download.pytorch.org/whl/{variant}"
    assert "onnxruntime-gpu==1.31.1" in plan.packages and "onnxruntime==1.31.1" not in plan.packages
    assert plan.disk_bytes_estimate > 5 * 2**30 and f"driver {driver}" in plan.reason


def test_nvml_cuda_version_wins_over_the_driver_table():
    assert make_plan(report(gpus=[nvidia("550.54.15")]), cuda_version=(12, 8)).variant == "cu128"


def test_an_old_nvidia_driver_falls_back_to_cpu_and_says_why():
    plan = make_plan(report(gpus=[nvidia("470.256.02")]))
    assert plan.variant == "cpu" and "too old" in plan.reason and "Update the NVIDIA driver" in plan.reason


def test_macos_arm64_uses_pypi_and_mps():
    plan = make_plan(report("Darwin 24.1.0", "arm64", [GpuInfo("Apple silicon GPU", "Apple", 1, None, None, "mps",
                                                               True)]))
    assert plan.variant == "mps" and plan.index_url is None and "Apple GPU" in plan.label


def test_amd_rocm_on_linux():
    plan = make_plan(report(), rocm_version=(6, 4))
    assert plan.variant == "rocm6.4" and plan.index_url.endswith("/whl/rocm6.4") and "ROCm" in plan.label


def test_index_override_and_wheel_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(INDEX_ENV, "pypi")
    assert make_plan(report()).index_url is None
    monkeypatch.setenv(INDEX_ENV, "https://mirror.example/whl/cpu")
    assert make_plan(report()).index_url == "https://mirror.example/whl/cpu"
    plan = make_plan(report(), wheel_dir=tmp_path)
    assert plan.wheel_dir == str(tmp_path) and "nothing to download" in plan.summary()
    assert InstallPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_pins_match_the_images_extra():
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    pinned = {p.split("==")[0].lower(): p for p in extra["images"]}
    assert pinned["torch"] == f"torch=={TORCH_VERSION}"
    for package in PACKAGES:
        name = package.split("==")[0].split(">=")[0].lower()
        if name in pinned:
            assert pinned[name] == package, (pinned[name], package)


# ---- status from install.json ----------------------------------------------------------


def test_the_dev_checkout_has_it_and_installs_nothing(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    env = ImageEngineEnv(tmp_path / "image")
    status = env.status()
    assert status.state == "host_has_it" and "nothing to install" in status.reason
    assert env.host_launch() is None and not (tmp_path / "image").exists()


def test_states_from_files(tmp_path):
    root = tmp_path.joinpath(*ODD) / "engines" / "image"
    env = ImageEngineEnv(root, use_host=False)
    assert env.status().state == "not_installed" and env.check().state == "not_installed"
    state = StateFile(root / "install.json")
    plan = make_plan(report())
    # An install whose process is gone (app closed or killed) is broken and resumable.
    state.write({"state": "installing", "pid": 999_999_999, "plan": plan.to_dict(), "step": "torch"})
    status = env.status()
    assert status.state == "broken" and status.resumable and "interrupted while installing PyTorch" in status.reason
    assert status.plan == plan
    # A failure before anything was made: not installed, with the reason.
    state.write({"state": "failed", "error": "No Python was found.", "plan": plan.to_dict()})
    status = env.status()
    assert status.state == "not_installed" and "No Python was found" in status.reason and not status.resumable
    # "ready" but the interpreter is gone: broken, offered for repair.
    (env.env_dir / "bin").mkdir(parents=True)
    state.write({"state": "ready", "plan": plan.to_dict()})
    status = env.status()
    assert status.state == "broken" and not status.resumable and "Python is missing" in status.reason
    assert env.host_launch() is None
    assert env.remove() > 0 and not root.exists() and env.status().state == "not_installed"


def test_install_refuses_without_space_offline_or_python(tmp_path, monkeypatch):
    env = ImageEngineEnv(tmp_path / "image", use_host=False)
    plan = make_plan(report())
    monkeypatch.setattr(env, "free_bytes", lambda: 200 * 2**20)
    with pytest.raises(EngineError) as info:
        env.install(plan)
    assert info.value.kind == NO_SPACE and "1.7 GB" in info.value.message and "200 MB is free" in info.value.message
    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    with pytest.raises(EngineError) as info:
        env.install(plan)
    assert info.value.kind == "offline" and "offline mode" in info.value.message
    with pytest.raises(EngineError) as info:  # a folder of wheels needs no network
        env.install(plan.with_wheel_dir(tmp_path / "missing"))
    assert info.value.kind == ErrorKind.BAD_INPUT and "does not exist" in info.value.message
    assert env.status().state == "not_installed"  # nothing was started
    monkeypatch.setenv("ATELIER_ENGINE_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(EngineError) as info:
        find_base_python(tmp_path / "uv", allow_download=False)
    assert info.value.kind == NO_PYTHON and "ATELIER_ENGINE_PYTHON" in info.value.message


def test_base_python_is_never_a_venv(monkeypatch):
    monkeypatch.setenv("ATELIER_ENGINE_PYTHON", sys.executable)
    found = find_base_python(Path("/nonexistent"), allow_download=False)
    assert found.source == "ATELIER_ENGINE_PYTHON" and found.version >= (3, 10)
    if sys.prefix != sys.base_prefix:  # this venv's Python is replaced by the one it was made from
        assert not found.path.startswith(sys.prefix)


def fake_installer(monkeypatch, env):
    """Record the commands an install runs, making the venv's python when the venv is created."""
    import engines.envs.image_engine as image_engine
    from engines.envs.installer import BasePython, RunResult

    commands = []

    def run(command, on_line, cancel, env=None, cwd=None, on_start=None, keep=400):
        commands.append(command)
        if command[1:3] == ["-m", "venv"]:
            python = Path(command[3]) / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.write_text("#!/bin/sh\n")
            python.chmod(0o755)
            for module in ("torch", "diffusers", "transformers", "onnxruntime"):
                package = Path(command[3]) / "lib" / "python3.11" / "site-packages" / module
                package.mkdir(parents=True)
                (package / "__init__.py").write_text("")
        on_line("Successfully installed x-1")
        return RunResult(0, ["Successfully installed x-1"])

    monkeypatch.setattr(image_engine, "run_streaming", run)
    monkeypatch.setattr(image_engine, "find_base_python", lambda *a, **k: BasePython("/usr/bin/python3.11",
                                                                                     (3, 11, 2), "PATH"))
    monkeypatch.setattr(image_engine, "import_check", lambda *a: ({"torch": "2.6.0+cu124", "cuda": "12.4"}, ""))
    monkeypatch.setattr(env, "free_bytes", lambda: 100 * 2**30)
    return commands


def test_install_commands_per_plan(tmp_path, monkeypatch):
    env = ImageEngineEnv(tmp_path / "image", use_host=False)
    commands = fake_installer(monkeypatch, env)
    status = env.install(make_plan(report(gpus=[nvidia("550.54.15")])))
    assert status.state == "ready" and status.torch_variant == "cu124"
    venv, upgrade, torch, rest = commands
    assert venv == ["/usr/bin/python3.11", "-m", "venv", str(env.env_dir)]
    assert upgrade[-2:] == ["--upgrade", "pip>=24.1"]
    assert torch[-3:] == ["--index-url", "https://download.pytorch.org/whl/cu124", "torch==2.6.0"]
    assert "onnxruntime-gpu==1.31.1" in rest and "--index-url" not in rest and "--no-index" not in rest
    # A folder of wheels: no index at all, for every step.
    commands.clear()
    env.remove()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("ATELIER_OFFLINE", "1")  # offline mode allows a folder of wheels
    env.install(make_plan(report(), wheel_dir=wheels))
    for command in commands[1:]:
        assert command[command.index("--no-index") + 1:command.index("--no-index") + 3] == ["--find-links",
                                                                                            str(wheels)]
    assert "--index-url" not in commands[2]


PIP_LOG = """\
Collecting torch==2.13.0
  Downloading torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl (191.8 MB)
Progress 0 of 191800000
Progress 95900000 of 191800000
Progress 191800000 of 191800000
Collecting filelock (from torch==2.13.0)
  Using cached filelock-4.2.11-py3-none-any.whl (222 kB)
Requirement already satisfied: typing-extensions>=4.10.0 in ./env/lib/python3.11/site-packages
Installing collected packages: filelock, torch
Successfully installed filelock-4.2.11 torch-2.13.0+cpu
"""


def test_pip_output_becomes_progress():
    tracker = PipProgress(200_000_000, 10)
    seen = []
    for line in PIP_LOG.splitlines():
        if tracker.feed(line):
            seen.append((tracker.message, round(tracker.fraction, 2), tracker.packages_done, tracker.packages_total))
    assert seen[1][0] == "Downloading torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl (191.8 MB)"
    fractions = [s[1] for s in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    halfway = seen[3]  # "Progress 95900000 of 191800000": half of the estimate, 80 % weight
    assert halfway[0].startswith("Downloading torch") and 0.35 <= halfway[1] <= 0.45
    assert tracker.bytes_seen >= 191_800_000
    assert ("Installing 2 packages (PyTorch is large: this takes a while)", 0.85, 0, 2) in seen
    assert seen[-1][2:] == (2, 2)


def test_pip_errors_in_words():
    lines = ["Collecting torch==9.9", "ERROR: Could not find a version that satisfies the requirement torch==9.9 "
             "(from versions: 2.13.0)", "ERROR: No matching distribution found for torch==9.9"]
    assert "from versions: 2.13.0" in pip_error(lines) and "No matching distribution" in pip_error(lines)
    assert "lacks a package" in pip_error(lines, wheel_dir="/w")
    full = ["ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device"]
    assert pip_error(full).startswith("The disk is full")


# ---- the engine host under another interpreter (this one, passed explicitly) -------------


def test_engines_source_root_is_the_checkout():
    assert engines_source_root() == ROOT


def test_request_cancels_never_leak_into_the_next_request():
    cancels = RequestCancels()
    cancels.cancel(3)
    assert cancels.flag(3).is_set() and cancels.flag(2).is_set() and not cancels.flag(4).is_set()


@pytest.fixture
def foreign_host(tmp_path):
    pytest.importorskip("llama_cpp")
    host = EngineHost(tmp_path.joinpath(*ODD) / "host.log", role="text", python=sys.executable, pythonpath=[str(ROOT)])
    yield host
    host.close()


def long_request(seed=5) -> TextRequest:
    return TextRequest((ChatMessage("user", "tell me everything"),),
                       SamplingParams(max_tokens=2000, temperature=1.0, min_p=0.0, seed=seed))


def test_foreign_host_loads_generates_cancels_and_survives_a_kill(foreign_host, tiny_gguf):
    spec = TextLoadSpec(str(tiny_gguf), context_length=2048)
    info = foreign_host.load("llama_cpp", spec)
    assert info.architecture == "llama" and foreign_host.python == sys.executable
    first_pid = foreign_host.pid
    events = list(foreign_host.generate(TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=4, seed=1))))
    assert isinstance(events[-1], FinishedEvent) and events[-1].result.text
    # Cancel from another thread: the cancel line stops it within half a second. (The random tiny model
    # streams few TokenEvents: most of its tokens are not valid UTF-8 text, so a timer cancels.)
    cancelled_at = []

    def cancel():
        cancelled_at.append(time.perf_counter())
        foreign_host.cancel()

    timer = threading.Timer(0.3, cancel)
    timer.start()
    events = list(foreign_host.generate(long_request()))
    elapsed = time.perf_counter() - cancelled_at[0]
    assert events[-1].result.finish_reason == "cancelled" and elapsed < 0.5, (events[-1].result.finish_reason, elapsed)
    # The cancel did not leak into the next request.
    events = list(foreign_host.generate(TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=4, seed=1))))
    assert events[-1].result.finish_reason == "length"
    # kill -9 mid-reply: EngineCrashed with the reason, and the next request starts a fresh host.
    killer = threading.Timer(0.3, os.kill, (foreign_host.pid, signal.SIGKILL))
    killer.start()
    with pytest.raises(EngineCrashed) as crash:
        list(foreign_host.generate(long_request()))
    killer.join()
    assert "killed" in crash.value.message and not foreign_host.is_running
    foreign_host.load("llama_cpp", spec)
    assert foreign_host.pid not in (None, first_pid)
    assert isinstance(list(foreign_host.generate(TextRequest((ChatMessage("user", "hi"),),
                                                             SamplingParams(max_tokens=2))))[-1], FinishedEvent)


def test_foreign_host_that_cannot_start_says_why(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    # The base interpreter: this venv has Atelier installed (editable), so it would find engines anyway.
    host = EngineHost(tmp_path / "h.log", python=base_python_311(), pythonpath=[str(empty)])
    with pytest.raises(EngineCrashed) as info:
        host.load("llama_cpp", TextLoadSpec("x.gguf"))
    assert "No module named 'engines'" in info.value.message
    missing = EngineHost(tmp_path / "m.log", python=str(tmp_path / "no-such-python"))
    with pytest.raises(EngineError) as info:
        missing.load("llama_cpp", TextLoadSpec("x.gguf"))
    assert info.value.kind == ErrorKind.UNAVAILABLE and "could not be started" in info.value.message


# ---- a real install (pytest -m engine_install) -------------------------------------------


def base_python_311() -> str:
    """python3.11 on PATH outside this venv (the base interpreter, as a user's machine has it)."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    return shutil.which("python3.11", path=path) or getattr(sys, "_base_executable", sys.executable)


@pytest.fixture(scope="module")
def install_env(tmp_path_factory):
    """ATELIER_ENGINE_PYTHON=<base python3.11>, ATELIER_TORCH_INDEX_URL=pypi (torch 2.13.0 from /opt/wheels)."""
    saved = {k: os.environ.get(k) for k in ("ATELIER_ENGINE_PYTHON", INDEX_ENV, "ATELIER_OFFLINE")}
    os.environ["ATELIER_ENGINE_PYTHON"] = base_python_311()
    os.environ[INDEX_ENV] = "pypi"
    os.environ.pop("ATELIER_OFFLINE", None)
    root = tmp_path_factory.mktemp("engine").joinpath(*ODD) / "data" / "engines" / "image"
    yield ImageEngineEnv(root, use_host=False)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


_INSTALL_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from engines.envs import ImageEngineEnv
env = ImageEngineEnv(Path({env_root!r}), use_host=False)
env.install(env.plan())
"""


@pytest.mark.slow
@pytest.mark.engine_install
def test_real_install_interrupted_cancelled_resumed(install_env):
    env = install_env
    plan = env.plan()
    assert plan.index_url is None and plan.variant == "cpu"
    # 1. The app is killed (kill -9) while pip installs torch: found as interrupted on the next start.
    app = subprocess.Popen([sys.executable, "-c", _INSTALL_SCRIPT.format(root=str(ROOT), env_root=str(env.root))])
    state = StateFile(env.root / "install.json")
    deadline = time.monotonic() + 300
    while state.read().get("step") != "torch" and time.monotonic() < deadline and app.poll() is None:
        time.sleep(0.2)
    assert state.read().get("step") == "torch", state.read()
    time.sleep(2)
    app.send_signal(signal.SIGKILL)
    app.wait()
    status = env.status()
    assert status.state == "broken" and status.resumable and "interrupted" in status.reason, status
    # 2. Resumed, then cancelled from the GUI's Cancel while the other packages install.
    cancel = threading.Event()
    steps = []

    def progress(p):
        steps.append(p)
        if p.step == "packages" and p.packages_done >= 3:  # pip is resolving the other packages
            cancel.set()

    started = time.monotonic()
    with pytest.raises(EngineError) as info:
        env.install(plan, progress, cancel)
    assert info.value.kind == "cancelled" and time.monotonic() - started < 240
    assert any("Reusing the environment" in s.message for s in steps)
    status = env.status()
    assert status.state == "broken" and status.resumable and "cancelled" in status.reason
    # 3. Resumed again: pip keeps what is there, and the engine ends ready.
    steps.clear()
    started = time.monotonic()
    status = env.install(plan, steps.append)
    took = time.monotonic() - started
    assert status.state == "ready", status
    assert status.versions["torch"].startswith("2.13.0") and status.versions["diffusers"] == "0.42.1"
    assert status.torch_variant == "cpu" and status.size_bytes > 500 * 2**20
    fractions = [s.fraction for s in steps if s.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    print(f"\nresume took {took:.0f} s; environment {status.size_bytes / 2**30:.2f} GB")
    assert env.check().state == "ready"


@pytest.mark.slow
@pytest.mark.engine_install
def test_real_env_runs_the_image_host_and_survives_a_kill(install_env, tiny_sd, tmp_path):
    from engines.diffusion.types import ImageLoadSpec, ImageRequest, StepEvent

    env = install_env
    if env.status().state != "ready":
        pytest.skip("the install test did not leave a ready engine")
    launch = env.host_launch()
    assert launch == {"python": str(env.python), "pythonpath": [str(ROOT)]}
    host = EngineHost(env.root.parent.parent / "logs" / "engine-host-image.log", role="image", **launch)
    try:
        host.load("diffusers", ImageLoadSpec(str(tiny_sd), backend="torch"))
        events = list(host.generate(ImageRequest("a test", width=64, height=64, steps=2, seed=3)))
        result = events[-1].result
        assert len(result.images) == 1 and (result.images[0].width, result.images[0].height) == (64, 64)
        assert result.images[0].png.startswith(b"\x89PNG")
        with pytest.raises(EngineCrashed) as crash:
            for event in host.generate(ImageRequest("a test", width=64, height=64, steps=40, seed=3)):
                if isinstance(event, StepEvent) and event.step == 1:
                    os.kill(host.pid, signal.SIGKILL)
        assert "killed" in crash.value.message
        host.load("diffusers", ImageLoadSpec(str(tiny_sd), backend="torch"))
        events = list(host.generate(ImageRequest("again", width=64, height=64, steps=1, seed=4)))
        assert len(events[-1].result.images) == 1
    finally:
        host.close()


@pytest.mark.slow
@pytest.mark.engine_install
def test_real_env_damage_is_found_and_repaired_then_removed(install_env):
    env = install_env
    if env.status().state != "ready":
        pytest.skip("the install test did not leave a ready engine")
    from engines.envs.health import site_packages

    init = site_packages(env.env_dir) / "diffusers" / "__init__.py"
    init.write_text("raise ImportError('diffusers broken on purpose')\n", encoding="utf-8")
    assert env.status().state == "ready"  # the quick look cannot see inside a file
    status = env.check()
    assert status.state == "broken" and "broken on purpose" in status.reason and not status.resumable
    assert env.status().state == "broken"  # remembered until repaired
    env.python.unlink()
    assert "Python" in env.status().reason
    assert env.repair(progress=lambda _p: None).state == "ready"
    assert env.check().state == "ready"
    size = env.status().size_bytes
    freed = env.remove()
    assert freed >= size * 0.9 and not env.root.exists()
    assert env.status().state == "not_installed"


def test_image_engine_root_is_under_data(tmp_path):
    class Paths:
        data = tmp_path.joinpath(*ODD)

    assert image_engine_root(Paths) == tmp_path.joinpath(*ODD) / "engines" / "image"
