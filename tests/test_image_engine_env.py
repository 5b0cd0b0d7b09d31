"""The image engine on demand: install plans, uv's output, install.json, and the host under another Python.

Fast tests cover the plan per hardware, the state machine of install.json,
the commands given to uv, uv's output and errors in words, and the engine
host under a foreign interpreter (this one, passed explicitly, so the Popen
path runs in every suite). tests/test_image_engine_uv.py runs the whole
installer with the real uv on tiny stand-in wheels. The real install
(``pytest -m engine_install``) is in tests/test_image_engine_install.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engines.api import ChatMessage, FinishedEvent, SamplingParams, TextLoadSpec, TextRequest, TokenEvent
from engines.envs import ImageEngineEnv, InstallPlan, engines_source_root, image_engine_root, make_plan
from engines.envs.installer import NO_PYTHON, NO_SPACE, StateFile, find_base_python, tree_size
from engines.envs.plan import BACKEND_ENV, PACKAGES, TORCH_VERSION, WHEELS_ENV
from engines.envs.uv import UvProgress, parse_resolution, uv_binary, uv_error
from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.host import EngineHost
from engines.host.cancel import RequestCancels
from engines.machine.hardware import CpuInfo, GpuInfo, HardwareReport, MemoryInfo
from tests.fixtures.base_python import base_python_311

ROOT = Path(__file__).resolve().parents[1]
ODD = ("Über Ordner", "ä b")  # a data folder with spaces and non-ASCII letters


def report(os_name="Linux 6.1", arch="x86_64", gpus=()) -> HardwareReport:
    return HardwareReport(os_name, "3.11.7", CpuInfo("Test CPU", arch, 4, 8, ["AVX2"]),
                          MemoryInfo(16 * 2**30, 8 * 2**30), list(gpus))


def nvidia(driver: str) -> GpuInfo:
    return GpuInfo("NVIDIA GeForce RTX 4090", "NVIDIA", 24 * 2**30, 20 * 2**30, driver, "nvml")


@pytest.fixture(autouse=True)
def default_backend(monkeypatch, request):
    if request.node.get_closest_marker("engine_install"):
        return  # the real install sets its own (module-wide) environment
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.delenv(WHEELS_ENV, raising=False)


# ---- plans -----------------------------------------------------------------------------


def test_cpu_only_gets_the_cpu_build():
    plan = make_plan(report())
    assert plan.kind == "cpu" and plan.label == "PyTorch 2.13 (CPU)" and plan.torch_backend == "auto"
    assert plan.packages[0] == f"torch=={TORCH_VERSION}" and "onnxruntime==1.31.1" in plan.packages
    assert plan.reason == "no supported GPU found: PyTorch runs on the CPU."
    assert plan.summary() == ("PyTorch 2.13 (CPU) + diffusers + ONNX Runtime: about 1.3 GB on disk, "
                              "315 MB to download")


def test_nvidia_leaves_the_cuda_build_to_uv():
    plan = make_plan(report(gpus=[nvidia("550.54.15")]))
    assert plan.kind == "cuda" and plan.torch_backend == "auto" and plan.label == "PyTorch 2.13 (NVIDIA CUDA)"
    assert "onnxruntime-gpu==1.31.1" in plan.packages and "onnxruntime==1.31.1" not in plan.packages
    assert plan.reason == ("NVIDIA GeForce RTX 4090: uv picks the CUDA build of PyTorch that its NVIDIA driver "
                           "550.54.15 supports (the CPU build if the driver is too old for all of them).")
    assert plan.disk_bytes_estimate > 5 * 2**30
    # The user can always take the CPU build instead: the small download, plain onnxruntime.
    cpu = plan.with_wheel_dir("/wheels").cpu_only()
    assert cpu.kind == "cpu" and cpu.torch_backend == "cpu" and cpu.wheel_dir == "/wheels"
    assert "onnxruntime==1.31.1" in cpu.packages and cpu.download_bytes_estimate < plan.download_bytes_estimate
    assert cpu.reason.startswith("the CPU build was chosen")


def test_macos_arm64_uses_the_apple_gpu():
    plan = make_plan(report("Darwin 24.1.0", "arm64", [GpuInfo("Apple silicon GPU", "Apple", 1, None, None, "mps",
                                                               True)]))
    assert plan.kind == "mps" and plan.torch_backend == "auto" and "Apple GPU" in plan.label


def test_backend_setting(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "cpu")
    plan = make_plan(report(gpus=[nvidia("570.86.10")]))
    assert (plan.kind, plan.torch_backend) == ("cpu", "cpu") and "onnxruntime==1.31.1" in plan.packages
    monkeypatch.setenv(BACKEND_ENV, "cu126")
    plan = make_plan(report())
    assert (plan.kind, plan.torch_backend) == ("cuda", "cu126") and "cu126 was asked for" in plan.reason
    monkeypatch.setenv(BACKEND_ENV, "index")  # no PyTorch index: torch like any other package
    plan = make_plan(report())
    assert (plan.kind, plan.torch_backend) == ("cpu", None) and "no PyTorch index" in plan.reason
    assert make_plan(report(), backend="auto").torch_backend == "auto"  # an explicit choice wins


def test_wheel_folder_and_install_json_round_trip(monkeypatch, tmp_path):
    plan = make_plan(report(), wheel_dir=tmp_path)
    assert plan.wheel_dir == str(tmp_path)
    assert plan.summary().endswith("nothing to download (from the folder of wheels)")
    assert InstallPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    monkeypatch.setenv(WHEELS_ENV, str(tmp_path))
    assert make_plan(report()).wheel_dir == str(tmp_path)
    # install.json written by the pip-based installer (before uv) still reads.
    old = {"variant": "cu124", "packages": ["torch==2.6.0"], "download_bytes_estimate": 1, "disk_bytes_estimate": 2,
           "index_url": "https://download.pytorch.org/whl/cu124", "label": "PyTorch 2.6 (CUDA 12.4)"}
    assert InstallPlan.from_dict(old).kind == "cuda" and InstallPlan.from_dict(old).packages == ("torch==2.6.0",)


def test_pins_match_the_images_extra():
    import tomllib

    import msgspec

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pinned = {p.split("==")[0].lower(): p for p in [*project["dependencies"], *project["optional-dependencies"]["images"]]}
    assert pinned["torch"] == f"torch=={TORCH_VERSION}"
    assert f"msgspec=={msgspec.__version__}" in PACKAGES  # the engine-host protocol, the same on both sides
    for package in PACKAGES:
        name = package.split("==")[0].split(">=")[0].lower()
        if name in pinned:
            assert pinned[name] == package, (pinned[name], package)


def test_uv_is_a_pinned_dependency_with_its_binary():
    import tomllib

    from engines.envs.uv import UV_VERSION

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert f"uv=={UV_VERSION}" in dependencies
    run = subprocess.run([uv_binary(), "--version"], capture_output=True, text=True, check=True)
    assert run.stdout.startswith(f"uv {UV_VERSION} ")


# ---- status from install.json ----------------------------------------------------------


@pytest.mark.slow
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
    state.write({"state": "installing", "pid": 999_999_999, "plan": plan.to_dict(), "step": "resolve"})
    status = env.status()
    assert status.state == "broken" and status.resumable and status.reason == (
        "The last install was interrupted while choosing the PyTorch build (the app closed or was stopped). "
        "Resume it, or start over.")
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
    monkeypatch.setattr(env, "free_bytes", lambda: 200_000_000)
    with pytest.raises(EngineError) as info:
        env.install(plan)
    assert info.value.kind == NO_SPACE and info.value.message == (
        f"Not enough disk space for the image engine: it needs about 1.3 GB on the drive of {env.root}, and "
        "200 MB is free. Free some space and try again.")
    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    with pytest.raises(EngineError) as info:
        env.install(plan)
    assert info.value.kind == "offline" and info.value.message == (
        "Atelier is in offline mode: installing the image engine needs the network. Turn offline mode off in Settings.")
    with pytest.raises(EngineError) as info:  # a folder of wheels needs no network
        env.install(plan.with_wheel_dir(tmp_path / "missing"))
    assert info.value.kind == ErrorKind.BAD_INPUT and info.value.message == (
        f"The folder of wheels {tmp_path / 'missing'} does not exist.")
    assert env.status().state == "not_installed"  # nothing was started
    monkeypatch.setenv("ATELIER_ENGINE_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(EngineError) as info:
        find_base_python(uv_binary(), dict(os.environ), allow_download=False)
    assert info.value.kind == NO_PYTHON and info.value.message.startswith(
        f"ATELIER_ENGINE_PYTHON is set to {tmp_path / 'no-python'}, which is not a usable Python 3.10+: ")


def test_base_python_is_never_a_venv(monkeypatch):
    monkeypatch.setenv("ATELIER_ENGINE_PYTHON", sys.executable)
    found = find_base_python(uv_binary(), dict(os.environ), allow_download=False)
    assert found.source == "ATELIER_ENGINE_PYTHON" and found.version >= (3, 10)
    if sys.prefix != sys.base_prefix:  # this venv's Python is replaced by the one it was made from
        assert not found.path.startswith(sys.prefix)


def test_uv_finds_a_system_python_outside_any_venv(monkeypatch, tmp_path):
    monkeypatch.delenv("ATELIER_ENGINE_PYTHON", raising=False)
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)  # as when started from an activated venv
    env = dict(os.environ, UV_PYTHON_INSTALL_DIR=str(tmp_path / "python"))
    found = find_base_python(uv_binary(), env, allow_download=False)
    assert found.source == "system" and (3, 10) <= found.version[:2] < (3, 14)
    assert not found.path.startswith(sys.prefix) or sys.prefix == sys.base_prefix


def test_without_a_system_python_uv_downloads_one(monkeypatch, tmp_path):
    """No Python on the system: ``uv python install`` (online only), then uv's own copy is found and used."""
    monkeypatch.delenv("ATELIER_ENGINE_PYTHON", raising=False)
    calls = tmp_path / "calls.txt"
    fake_uv = tmp_path / "uv"  # answers like uv on a machine with no Python 3.10-3.13
    fake_uv.write_text(f"""#!/bin/sh
echo "$*" >> '{calls}'
case "$*" in
  "python find --system --no-project >=3.10,<3.14") echo "error: No interpreter found" >&2; exit 2 ;;
  "python install 3.11") exit 0 ;;
  "python find --system --managed-python --no-project 3.11") echo '{sys.executable}' ;;
  *) exit 3 ;;
esac
""")
    fake_uv.chmod(0o755)
    with pytest.raises(EngineError) as info:  # offline: no download, and the message says how to get one
        find_base_python(str(fake_uv), dict(os.environ), allow_download=False)
    assert info.value.kind == NO_PYTHON and info.value.message.startswith(
        "No Python 3.10–3.13 to build the image engine with was found. Atelier can download one itself when it "
        "may use the internet")
    calls.unlink()
    found = find_base_python(str(fake_uv), dict(os.environ), allow_download=True)
    assert found.source == "uv" and found.version[:2] == sys.version_info[:2]
    assert calls.read_text().splitlines() == ["python find --system --no-project >=3.10,<3.14", "python install 3.11",
                                              "python find --system --managed-python --no-project 3.11"]


def fake_installer(monkeypatch, env):
    """Record the commands an install runs, making the venv's python when uv creates the venv."""
    import engines.envs.image_engine as image_engine
    from engines.envs.installer import BasePython, RunResult

    commands = []

    def run(command, on_line, cancel, env=None, cwd=None, on_start=None, keep=400, on_tick=None, tick_s=0.5):
        commands.append(command)
        lines = ["Resolved 10 packages in 3ms"]
        if command[1] == "venv":
            venv = Path(command[-1])
            python = venv / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.write_text("#!/bin/sh\n")
            python.chmod(0o755)
            for module in ("torch", "diffusers", "transformers", "onnxruntime"):
                package = venv / "lib" / "python3.11" / "site-packages" / module
                package.mkdir(parents=True)
                (package / "__init__.py").write_text("")
        elif "--dry-run" in command:
            lines += ["Would install 10 packages", " + diffusers==0.42.1", " + torch==2.13.0+cu128"]
        else:
            lines += ["Prepared 10 packages in 9ms", "Installed 10 packages in 2ms"]
        for line in lines:
            on_line(line)
        return RunResult(0, lines)

    monkeypatch.setattr(image_engine, "run_streaming", run)
    monkeypatch.setattr(image_engine, "find_base_python", lambda *a, **k: BasePython("/usr/bin/python3.11",
                                                                                     (3, 11, 2), "system"))
    monkeypatch.setattr(image_engine, "import_check", lambda *a: ({"torch": "2.13.0+cu128", "cuda": "12.8"}, ""))
    monkeypatch.setattr(env, "free_bytes", lambda: 100 * 2**30)
    return commands


def test_uv_commands_per_plan(tmp_path, monkeypatch):
    env = ImageEngineEnv(tmp_path / "image", use_host=False)
    commands = fake_installer(monkeypatch, env)
    steps = []
    status = env.install(make_plan(report(gpus=[nvidia("570.86.10")])), steps.append)
    assert status.state == "ready" and status.torch_variant == "cu128"
    venv, resolve, install = commands
    uv = uv_binary()
    assert venv == [uv, "venv", "--color", "never", "--no-project", "--python", "/usr/bin/python3.11", str(env.env_dir)]
    python = str(env.python)
    assert resolve[:9] == [uv, "pip", "install", "--color", "never", "--python", python, "--torch-backend", "auto"]
    assert resolve[9] == "--dry-run" and install == resolve[:9] + resolve[10:]
    assert "onnxruntime-gpu==1.31.1" in install and "--no-index" not in install
    assert "uv chose PyTorch 2.13.0+cu128 for this computer (2 packages to install)" in [s.message for s in steps]
    assert StateFile(env.root / "install.json").read()["torch_build"] == "cu128"
    # A folder of wheels: offline, no index, no torch backend (the folder decides), for every uv step.
    commands.clear()
    env.remove()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("ATELIER_OFFLINE", "1")  # offline mode allows a folder of wheels
    env.install(make_plan(report(), wheel_dir=wheels))
    for command in commands[1:]:
        assert command[7:11] == ["--offline", "--no-index", "--find-links", str(wheels)]
        assert "--torch-backend" not in command


# ---- uv's output and errors (lines as uv 0.13.9 wrote them here) --------------------------

UV_INSTALL = """\
Using Python 3.11.7 environment at: env
Resolved 54 packages in 1.21s
Downloading onnxruntime (22.7MiB)
Downloading torch (191.8MiB)
 Downloaded onnxruntime
 Downloaded torch
Prepared 54 packages in 19.80s
Installed 54 packages in 410ms
 + accelerate==1.15.0
 + torch==2.13.0+cpu
"""


def test_uv_output_and_cache_size_become_progress():
    tracker = UvProgress(expected_bytes=1000 * 2**20)
    seen = []
    for line in UV_INSTALL.splitlines():
        if tracker.feed(line):
            seen.append((tracker.message, round(tracker.fraction, 3), tracker.bytes_done))
        if line.startswith("Downloading torch"):
            tracker.set_cache_bytes(500 * 2**20)  # half of the unpacked size is in uv's cache
            seen.append((tracker.message, round(tracker.fraction, 3), tracker.bytes_done))
    assert seen == [
        ("Unpacking 54 packages…", 0.02, 0),
        ("Downloading onnxruntime (22.7 MiB)…", 0.02, 0),
        ("Downloading onnxruntime (22.7 MiB), torch (191.8 MiB)…", 0.02, 0),
        ("Downloading onnxruntime (22.7 MiB), torch (191.8 MiB)…", 0.46, 500 * 2**20),
        ("Downloading torch (191.8 MiB)…", 0.46, 500 * 2**20),
        ("Unpacking 54 packages…", 0.46, 500 * 2**20),
        ("Installing 54 packages into the environment (PyTorch is large: this takes a moment)…", 0.9, 1000 * 2**20),
        ("Installed 54 packages", 1.0, 1000 * 2**20),
    ]
    # A resumed install starts where the cache of the interrupted one stands, and never goes back.
    resumed = UvProgress(expected_bytes=1000, cache_bytes_at_start=600)
    resumed.feed("Resolved 54 packages in 0.2s")
    assert resumed.fraction == pytest.approx(0.02 + 0.88 * 0.6)
    resumed.set_cache_bytes(100)
    assert resumed.bytes_done == 600 and resumed.fraction == pytest.approx(0.02 + 0.88 * 0.6)


def test_dry_run_names_the_torch_build():
    lines = ["Resolved 3 packages in 1ms", "Would install 3 packages", " + filelock==4.3.1",
             " + torch==2.13.0+cu128", " + typing-extensions==4.16.0"]
    resolution = parse_resolution(lines)
    assert resolution.torch_version == "2.13.0+cu128" and resolution.changes == 3
    assert parse_resolution(["Audited 10 packages in 2ms"]).torch_version is None


def test_uv_errors_in_words():
    missing = ["Using Python 3.11.7 environment at: v5", "error: No solution found when resolving dependencies",
               "  cause: Because six was not found in the provided package locations and you require six, we can "
               "conclude that your requirements are unsatisfiable."]
    assert uv_error(missing, wheel_dir="/w") == (
        "The folder of wheels /w lacks a package: No solution found when resolving dependencies: Because six was "
        "not found in the provided package locations and you require six, we can conclude that your requirements "
        "are unsatisfiable.")
    offline = ["error: Request failed after 3 retries in 9.5s",
               "  cause: Failed to fetch: http://no-such-host.invalid/simple/six/",
               "  cause: error sending request for url (http://no-such-host.invalid/simple/six/)",
               "  cause: client error (Connect)", "  cause: dns error", "  cause: error resolving DNS",
               "  cause: failed to lookup address information: Name or service not known"]
    assert uv_error(offline) == (
        "Could not reach the package index (Request failed after 3 retries in 9.5s: failed to lookup address "
        "information: Name or service not known). Check the internet connection, or install from a folder of "
        "wheels.")
    full = ["Resolved 1 package in 1ms", "error: Failed to download `torch==2.13.0+cpu`",
            "  cause: Failed to extract archive: /w/torch-2.13.0+cpu-py3-none-any.whl",
            "  cause: I/O operation failed during extraction",
            "  cause: failed to write to file `/d/cache/.tmpmqn4Yp/torch/_weights.bin`: No space left on device "
            "(os error 28)"]
    assert uv_error(full) == (
        "The disk is full: uv could not write the packages (Failed to download `torch==2.13.0+cpu`: failed to write "
        "to file `/d/cache/.tmpmqn4Yp/torch/_weights.bin`: No space left on device (os error 28)).")
    assert uv_error([]) == "uv stopped without saying why"


def test_tree_size_counts_hard_links_once(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "env").mkdir()
    (tmp_path / "cache" / "lib.so").write_bytes(os.urandom(256 * 1024))
    os.link(tmp_path / "cache" / "lib.so", tmp_path / "env" / "lib.so")  # as uv links the environment to its cache
    assert tree_size(tmp_path) == tree_size(tmp_path / "env") == tree_size(tmp_path / "cache") >= 256 * 1024


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


@pytest.mark.slow
def test_foreign_host_loads_generates_cancels_and_survives_a_kill(foreign_host, tiny_gguf):
    spec = TextLoadSpec(str(tiny_gguf), context_length=2048, threads=1)
    info = foreign_host.load("llama_cpp", spec)
    assert info.architecture == "llama" and foreign_host.python == sys.executable
    first_pid = foreign_host.pid
    events = list(foreign_host.generate(TextRequest((ChatMessage("user", "hi"),),
                                                    SamplingParams(max_tokens=4, seed=1))))
    assert isinstance(events[-1], FinishedEvent) and events[-1].result.text
    # Cancel as soon as the first text arrives: the cancel line stops it long before its 2,000 tokens (a timer
    # raced the tiny model, which can reach its end-of-text token within a fraction of a second).
    events = []
    for event in foreign_host.generate(long_request()):
        events.append(event)
        if isinstance(event, TokenEvent) and len([e for e in events if isinstance(e, TokenEvent)]) == 1:
            foreign_host.cancel()
    assert events[-1].result.finish_reason == "cancelled", events[-1].result
    # The cancel did not leak into the next request.
    events = list(foreign_host.generate(TextRequest((ChatMessage("user", "hi"),),
                                                    SamplingParams(max_tokens=4, seed=1))))
    assert events[-1].result.finish_reason == "length"
    # kill -9 mid-reply: EngineCrashed with the reason, and the next request starts a fresh host.
    with pytest.raises(EngineCrashed) as crash:
        for event in foreign_host.generate(long_request()):
            if isinstance(event, TokenEvent):
                os.kill(foreign_host.pid, signal.SIGKILL)
    assert "killed" in crash.value.message and not foreign_host.is_running
    foreign_host.load("llama_cpp", spec)
    assert foreign_host.pid not in (None, first_pid)
    assert isinstance(list(foreign_host.generate(TextRequest((ChatMessage("user", "hi"),),
                                                             SamplingParams(max_tokens=2))))[-1], FinishedEvent)


@pytest.mark.slow
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


def test_image_engine_root_is_under_data(tmp_path):
    class Paths:
        data = tmp_path.joinpath(*ODD)

    assert image_engine_root(Paths) == tmp_path.joinpath(*ODD) / "engines" / "image"
