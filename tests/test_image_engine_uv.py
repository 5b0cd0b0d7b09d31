"""The whole image-engine installer with the real uv, on tiny stand-in wheels, offline.

Each test builds the wheels the plan pins as a few kilobytes each
(tests/fixtures/fake_wheels.py) and runs :class:`engines.envs.ImageEngineEnv`
for real: uv finds the base Python, creates the environment, reports the
PyTorch build it chose, installs, and the health check imports the result
with the new Python. Sources: a folder of wheels with offline mode on, and
a package index on 127.0.0.1 whose torch download can be slowed down so
that Cancel and kill -9 land in the middle of it. The engines source is
left out of the health check here (the stand-in torch cannot run it);
tests/test_image_engine_env.py's engine_install tests import it for real.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engines.envs import ImageEngineEnv
from engines.envs.health import site_packages
from engines.envs.installer import INSTALL_FAILED, StateFile, tree_size
from engines.envs.plan import BACKEND_ENV, PACKAGES, WHEELS_ENV
from engines.errors import EngineError, ErrorKind
from engines.machine.hardware import CpuInfo, HardwareReport, MemoryInfo
from tests.fixtures.fake_wheels import WheelIndex, build_fake_wheels

ROOT = Path(__file__).resolve().parents[1]
CPU = HardwareReport("Linux 6.1", "3.11.7", CpuInfo("Test CPU", "x86_64", 2, 2, []), MemoryInfo(16 * 2**30, 8 * 2**30))


@pytest.fixture(autouse=True)
def private_engine(monkeypatch):
    """No engines source in the health check, the base Python found by uv, no settings from the outside."""
    import engines.host.standalone as standalone

    monkeypatch.setattr(standalone, "engines_source_root", lambda: None)
    for name in ("ATELIER_ENGINE_PYTHON", BACKEND_ENV, WHEELS_ENV, "ATELIER_OFFLINE", "UV_DEFAULT_INDEX"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def engine(tmp_path) -> ImageEngineEnv:
    return ImageEngineEnv(tmp_path / "Über Ordner" / "engines" / "image", use_host=False)


@pytest.fixture
def index(tmp_path, monkeypatch):
    """The stand-in wheels (torch padded to 4 MiB) on a package index at 127.0.0.1, the only index uv sees."""
    server = WheelIndex(build_fake_wheels(tmp_path / "served", torch_pad_bytes=4 * 2**20))
    monkeypatch.setenv("UV_DEFAULT_INDEX", server.url)
    yield server
    server.close()


def test_offline_from_a_folder_of_wheels_then_removed(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("ATELIER_OFFLINE", "1")  # offline mode: a folder of wheels is the one way in
    plan = engine.plan(CPU, wheel_dir=build_fake_wheels(tmp_path / "my wheels"))
    steps = []
    status = engine.install(plan, steps.append)
    assert status.state == "ready" and status.torch_variant == "cpu" and status.python == engine.python
    assert status.versions["torch"] == "2.13.0+cpu" and status.versions["diffusers"] == "0.42.1"
    messages = [s.message for s in steps]
    count = len(PACKAGES) + 1  # and torch itself
    assert f"uv chose PyTorch 2.13.0+cpu for this computer ({count} packages to install)" in messages
    assert messages[-1].startswith("Installed: ") and f"Installed {count} packages" in messages
    fractions = [s.fraction for s in steps if s.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # The cache is gone once the engine is ready; the environment kept its files.
    assert not engine.cache_dir.exists() and (site_packages(engine.env_dir) / "torch" / "version.py").is_file()
    assert engine.check().state == "ready" and engine.host_launch() is None  # no engines source here
    size = status.size_bytes
    assert size == tree_size(engine.root) and engine.remove() >= size * 0.9 and not engine.root.exists()


def test_a_folder_that_lacks_a_package_says_which(engine, tmp_path):
    wheels = build_fake_wheels(tmp_path / "wheels", leave_out=("onnx",))
    with pytest.raises(EngineError) as info:
        engine.install(engine.plan(CPU, wheel_dir=wheels))
    assert info.value.kind == INSTALL_FAILED and info.value.message == (
        f"Installing PyTorch 2.13 (CPU) failed: The folder of wheels {wheels} lacks a package: No solution found "
        "when resolving dependencies: Because onnx was not found in the provided package locations and you require "
        "onnx==1.23.2, we can conclude that your requirements are unsatisfiable.")
    status = engine.status()
    assert status.state == "broken" and status.resumable and status.reason.startswith("The last install failed: ")
    # The missing wheel added to the folder, the same install resumes in the environment already made.
    build_fake_wheels(wheels)
    steps = []
    assert engine.install(engine.plan(CPU, wheel_dir=wheels), steps.append).state == "ready"
    assert "Reusing the environment of the earlier install" in [s.message for s in steps]


@pytest.mark.slow
def test_index_download_shows_progress_cancels_and_resumes(engine, index):
    index.throttle_bytes_per_s = 2 * 2**20  # the 4 MiB torch takes about two seconds
    plan = dataclasses.replace(engine.plan(CPU, backend="index"), disk_bytes_estimate=5 * 2**20)
    cancel = threading.Event()
    steps = []

    def progress(p):
        steps.append(p)
        if p.message.startswith("Downloading torch") and p.bytes_done > 2**20:  # a part is unpacked
            cancel.set()

    with pytest.raises(EngineError) as info:
        engine.install(plan, progress, cancel)
    assert info.value.kind == ErrorKind.CANCELLED
    assert "Downloading torch (4.0 MiB)…" in [s.message for s in steps]
    status = engine.status()
    assert status.state == "broken" and status.resumable
    assert status.reason == "The last install was cancelled before it finished."
    index.throttle_bytes_per_s = 0
    steps.clear()
    status = engine.install(plan, steps.append)
    assert status.state == "ready" and status.versions["torch"] == "2.13.0+cpu"
    assert index.torch_requests == 2  # the cancelled download was started again; the rest came from the cache
    assert "Reusing the environment of the earlier install" in [s.message for s in steps]


_KILLED_INSTALL = """
import sys
sys.path[:0] = [{root!r}]
import engines.host.standalone as standalone
standalone.engines_source_root = lambda: None
from pathlib import Path
from engines.envs import ImageEngineEnv
env = ImageEngineEnv(Path({env_root!r}), use_host=False)
env.install(env.plan(backend="index"))
"""


@pytest.mark.slow
def test_kill_9_mid_download_is_found_and_resumed(engine, index):
    import psutil

    index.throttle_bytes_per_s = 256 * 1024  # 16 s for torch: the kill lands inside the download
    app = subprocess.Popen([sys.executable, "-c", _KILLED_INSTALL.format(root=str(ROOT), env_root=str(engine.root))])
    assert index.torch_started.wait(120) and app.poll() is None
    os.kill(app.pid, signal.SIGKILL)
    app.wait()
    state = StateFile(engine.root / "install.json").read()
    assert state["step"] == "install" and state["torch_version"] == "2.13.0+cpu"
    uv = state["worker_pid"]  # in its own process group, it outlives the app
    assert psutil.pid_exists(uv)
    status = engine.status()
    assert status.state == "broken" and status.resumable
    assert status.reason == ("The last install was interrupted while installing PyTorch, diffusers and ONNX Runtime "
                             "(the app closed or was stopped). Resume it, or start over.")
    index.throttle_bytes_per_s = 0
    status = engine.install(engine.plan(CPU, backend="index"))  # stops the orphaned uv first
    assert status.state == "ready" and status.versions["torch"] == "2.13.0+cpu"
    assert not psutil.pid_exists(uv) or psutil.Process(uv).status() == psutil.STATUS_ZOMBIE


def test_damage_found_and_repaired_from_the_folder(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    wheels = build_fake_wheels(tmp_path / "wheels")
    assert engine.install(engine.plan(CPU, wheel_dir=wheels)).state == "ready"
    init = site_packages(engine.env_dir) / "diffusers" / "__init__.py"
    init.write_text("raise ImportError('diffusers broken on purpose')\n", encoding="utf-8")
    status = engine.check()
    assert status.state == "broken" and not status.resumable
    assert status.reason == ("The image engine is damaged: importing the engine failed: ImportError: diffusers broken "
                             "on purpose. Repair it to install it again.")
    assert engine.repair(progress=lambda _p: None).state == "ready"  # the last plan: the same folder
    assert engine.check().state == "ready" and "broken on purpose" not in init.read_text(encoding="utf-8")


def test_full_disk_during_the_install_says_so(engine, tmp_path, monkeypatch):
    """A 3 MiB tmpfs under the engine: uv fills it unpacking a 4 MiB torch; the message says the disk is full."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    wheels = build_fake_wheels(tmp_path / "wheels", torch_pad_bytes=4 * 2**20)
    engine.root.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(engine.root)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"could not mount a tmpfs: {mounted.stderr.strip()}")
    try:
        plan = dataclasses.replace(engine.plan(CPU, wheel_dir=wheels), disk_bytes_estimate=2**20)
        with pytest.raises(EngineError) as info:
            engine.install(plan)
        assert info.value.kind == INSTALL_FAILED
        # (Which package meets the full disk first depends on uv's parallel unpacking.)
        assert info.value.message.startswith("Installing PyTorch 2.13 (CPU) failed: The disk is full: uv could not "
                                             "write the packages (Failed to download `")
        assert info.value.message.endswith("No space left on device (os error 28)).")
        status = engine.status()
        assert status.state == "broken" and status.resumable and "The disk is full" in status.reason
    finally:
        subprocess.run(["umount", "-l", str(engine.root)], check=False)
