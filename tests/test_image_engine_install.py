"""A real install of the image engine (``pytest -m engine_install``): torch 2.13.0, diffusers and ONNX Runtime.

They go into a temporary data folder whose path has spaces and non-ASCII
letters, from a folder of the real wheels (``pip download`` fills it once:
torch from /opt/wheels, the rest from the package index, so uv itself never
resolves torch online); they are left out of the default run by pyproject's
addopts. tests/test_image_engine_env.py has the fast tests of the same code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engines.envs import ImageEngineEnv
from engines.envs.installer import StateFile, tree_size
from engines.envs.plan import BACKEND_ENV, PACKAGES, TORCH_VERSION, WHEELS_ENV
from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.host import EngineHost
from tests.fixtures.base_python import base_python_311
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[1]
ODD = ("Über Ordner", "ä b")  # a data folder with spaces and non-ASCII letters


@pytest.fixture(scope="module")
def real_wheels(tmp_path_factory) -> Path:
    """The real wheels of the image engine, fetched once by pip (torch 2.13.0+cpu from /opt/wheels here)."""
    folder = tmp_path_factory.mktemp("real-wheels")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(folder), f"torch=={TORCH_VERSION}",
                    *PACKAGES], check=True)
    return folder


@pytest.fixture(scope="module")
def install_env(tmp_path_factory, real_wheels):
    """The engine under an odd data folder, installed from a package index on 127.0.0.1 serving the real wheels.

    ATELIER_ENGINE_PYTHON is the base python3.11, and ATELIER_TORCH_BACKEND=index: uv sees only this index
    (UV_DEFAULT_INDEX), so it never resolves torch online.
    """
    from tests.fixtures.fake_wheels import WheelIndex

    index = WheelIndex(real_wheels)
    names = ("ATELIER_ENGINE_PYTHON", BACKEND_ENV, WHEELS_ENV, "ATELIER_OFFLINE", "UV_DEFAULT_INDEX")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(ATELIER_ENGINE_PYTHON=base_python_311(), UV_DEFAULT_INDEX=index.url)
    os.environ[BACKEND_ENV] = "index"
    os.environ.pop(WHEELS_ENV, None)
    os.environ.pop("ATELIER_OFFLINE", None)
    root = tmp_path_factory.mktemp("engine").joinpath(*ODD) / "data" / "engines" / "image"
    env = ImageEngineEnv(root, use_host=False)
    env.index = index
    yield env
    index.close()
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
    import psutil

    env, index = install_env, install_env.index
    plan = env.plan()
    assert plan.torch_backend is None and plan.kind == "cpu"
    # 1. The app is killed (kill -9) while uv downloads torch (slowed to ~20 MB/s): found as interrupted
    #    on the next start.
    index.throttle_bytes_per_s = 20 * 2**20
    app = subprocess.Popen([sys.executable, "-c", _INSTALL_SCRIPT.format(root=str(ROOT), env_root=str(env.root))])
    assert index.torch_started.wait(600) and app.poll() is None
    while tree_size(env.root / "cache") < 100 * 2**20 and app.poll() is None:  # the small packages are unpacked
        time.sleep(0.2)
    app.send_signal(signal.SIGKILL)
    app.wait()
    state = StateFile(env.root / "install.json").read()
    assert state["step"] == "install" and state["torch_version"] == "2.13.0+cpu"
    orphan = state["worker_pid"]  # uv runs in its own process group: it outlives the app
    assert psutil.pid_exists(orphan)
    status = env.status()
    assert status.state == "broken" and status.resumable, status
    assert status.reason == ("The last install was interrupted while installing PyTorch, diffusers and ONNX Runtime "
                             "(the app closed or was stopped). Resume it, or start over.")
    # 2. Resumed (the orphaned uv is stopped first), then cancelled from the GUI's Cancel mid-download.
    cancel = threading.Event()
    steps = []

    def progress(p):
        steps.append(p)
        if p.message.startswith("Downloading torch"):
            cancel.set()

    with pytest.raises(EngineError) as info:
        env.install(plan, progress, cancel)
    assert info.value.kind == ErrorKind.CANCELLED
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
    assert "Reusing the environment of the earlier install" in [s.message for s in steps]
    kept = [s.bytes_done for s in steps if s.step == "install"][0]
    assert kept > 50 * 2**20  # what uv had unpacked before the kill is still in its cache
    status = env.status()
    assert status.state == "broken" and status.resumable and "cancelled" in status.reason
    # 3. Resumed again at full speed: uv keeps what is there, and the engine ends ready.
    index.throttle_bytes_per_s = 0
    steps.clear()
    started = time.monotonic()
    status = env.install(plan, steps.append)
    took = time.monotonic() - started
    assert status.state == "ready", status
    assert status.versions["torch"].startswith("2.13.0") and status.versions["diffusers"] == "0.42.1"
    assert status.torch_variant == "cpu" and status.size_bytes > 500 * 2**20
    assert index.torch_requests == 3 and not (env.root / "cache").exists()
    fractions = [s.fraction for s in steps if s.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    print(f"\nresume took {took:.0f} s; environment {status.size_bytes / 2**30:.2f} GiB")
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
    started = time.monotonic()  # a repair is a whole install: new environment, nothing cached
    assert env.repair(progress=lambda _p: None).state == "ready"
    took = time.monotonic() - started
    assert env.check().state == "ready"
    size = env.status().size_bytes
    print(f"\nfull install (repair) from the index on 127.0.0.1 took {took:.0f} s; {size / 2**30:.2f} GiB on disk")
    freed = env.remove()
    assert freed >= size * 0.9 and not env.root.exists()
    assert env.status().state == "not_installed"
