"""The Images page's image-engine install: plan sizes, progress, cancel, failure and Retry, Repair, Remove.

The installer is a stand-in (:class:`FakeEnv`) with the real
:class:`engines.envs.EnvStatus` and real plans, so these tests are fast;
tests/test_image_engine_env.py installs for real.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engines.envs import EnvStatus, InstallProgress, make_plan
from engines.envs.installer import CANCELLED, INSTALL_FAILED
from engines.errors import EngineError
from engines.machine.hardware import CpuInfo, GpuInfo, HardwareReport, MemoryInfo, probe
from engines.engine_plugin import Availability
from engines.workspace import open_workspace
from tests.fixtures.fake_image_host import FakeImageHost

pytestmark = pytest.mark.gui
GB = 1_000_000_000
REASON = "the Python package 'torch' is not installed."


def cpu_report() -> HardwareReport:
    return HardwareReport("Linux 6.1", "3.11.7", CpuInfo("Test CPU", "x86_64", 4, 8, []), MemoryInfo(16 * GB, 8 * GB))


class FakeEnv:
    """ImageEngineEnv's interface with scripted installs: ``gate`` holds an install until set."""

    def __init__(self, state: str = "not_installed", reason: str = "", resumable: bool = False,
                 hardware: HardwareReport | None = None) -> None:
        self.state, self.reason, self.resumable = state, reason, resumable
        self.hardware = hardware or cpu_report()
        self.fail_next: EngineError | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[str] = []
        self.plans: list = []

    def status(self) -> EnvStatus:
        if self.state == "ready":
            return EnvStatus("ready", Path("/env/bin/python"), int(1.4 * GB), "cpu",
                             versions={"torch": "2.13.0+cpu"})
        return EnvStatus(self.state, None, reason=self.reason, resumable=self.resumable)

    def plan(self, hardware=None, wheel_dir=None, backend=None):
        return make_plan(hardware or self.hardware, wheel_dir=wheel_dir, backend=backend)

    def install(self, plan, progress, cancel):
        return self._run("install", plan, progress, cancel)

    def repair(self, plan, progress, cancel):
        return self._run("repair", plan, progress, cancel)

    def _run(self, what, plan, progress, cancel):
        self.calls.append(what)
        self.plans.append(plan)
        progress(InstallProgress("torch", "Downloading torch-2.13.0+cpu…whl (191.8 MB)", 0.3, 1, 10))
        while not self.gate.wait(0.02):
            if cancel.is_set():
                self.state, self.reason, self.resumable = "broken", "The last install was cancelled.", True
                raise EngineError(CANCELLED, "The install was cancelled. Resume it later, or remove it.")
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            self.last_error = error.message
            self.state, self.reason = "not_installed", f"The last install failed: {error.message}"
            raise error
        progress(InstallProgress("packages", "Installing 44 packages", 0.9, 0, 44))
        self.state, self.reason, self.resumable = "ready", "", False
        return self.status()

    def remove(self) -> int:
        self.calls.append("remove")
        self.state = "not_installed"
        return int(1.4 * GB)


@pytest.fixture
def engine_missing(monkeypatch):
    import desktop.pages.images_page as images_page

    monkeypatch.setattr(images_page, "image_engine_availability", lambda: Availability(False, REASON))


def make_page(qtbot, env, workspace=None):
    from desktop.pages.images_page import ImagesPage
    from desktop.workers.image_worker import ImageWorker

    workspace = workspace or open_workspace()
    host = FakeImageHost()
    page = ImagesPage(workspace, worker=ImageWorker(workspace, host=host), engine_env=env)
    qtbot.addWidget(page)
    page.resize(1200, 800)
    page.show()
    page.host = host
    return page


def test_panel_shows_the_plan_and_its_sizes(qtbot, engine_missing, tmp_path):
    page = make_page(qtbot, FakeEnv())
    try:
        panel = page.engine_panel
        assert panel.isVisible() and panel.install_box.isVisible()
        assert page.engine_message.text() == f"The image engine is not installed: {REASON}"
        assert panel.plan_label.text() == ("PyTorch 2.13 (CPU) + diffusers + ONNX Runtime: about 1.3 GB on disk, "
                                           "315 MB to download")
        assert not panel.cpu_only_box.isVisible()  # the CPU build is the plan already
        assert "no supported GPU" in panel.variant_label.text()
        assert panel.install_button.text() == "Install image engine" and panel.install_button.isEnabled()
        assert panel.wheels_button.isVisible() and not panel.progress_bar.isVisible()
        panel.set_wheel_dir(str(tmp_path))
        assert "nothing to download" in panel.plan_label.text() and str(tmp_path) in panel.wheels_label.text()
        assert panel.current_plan().wheel_dir == str(tmp_path)
        assert not page.controls.generate_button.isEnabled()
    finally:
        page.shutdown()


def test_install_shows_progress_then_the_engine_is_ready(qtbot, engine_missing, tmp_path):
    env = FakeEnv()
    env.gate.clear()
    page = make_page(qtbot, env)
    try:
        panel = page.engine_panel
        panel.set_wheel_dir(str(tmp_path))
        assert panel.start_install()
        qtbot.waitUntil(lambda: "Downloading torch" in panel.step_label.text(), timeout=5000)
        assert panel.progress_bar.isVisible() and panel.progress_bar.value() == 300
        assert "1/10 packages" in panel.step_label.text()
        assert panel.cancel_button.isVisible() and not panel.install_button.isEnabled()
        assert not panel.start_install()  # one at a time
        env.gate.set()
        qtbot.waitUntil(lambda: page.view.isVisible(), timeout=5000)
        assert env.calls == ["install"] and env.plans[0].wheel_dir == str(tmp_path)
        assert page.controls.generate_button.isEnabled()
        qtbot.waitUntil(lambda: page.host.closed >= 1, timeout=5000)  # the worker dropped the old host
        assert page.engine_line.isVisible()
        assert page.engine_line.remove_button.text() == "Remove image engine (frees 1.4 GB)"
        assert "2.13.0+cpu" in page.engine_line.label.text()
    finally:
        page.shutdown()


def test_an_nvidia_machine_can_choose_the_cpu_build(qtbot, engine_missing):
    gpu = GpuInfo("NVIDIA GeForce RTX 4090", "NVIDIA", 24 * GB, 20 * GB, "570.86.10", "nvml")
    env = FakeEnv(hardware=HardwareReport("Linux 6.1", "3.11.7", CpuInfo("Test CPU", "x86_64", 4, 8, []),
                                          MemoryInfo(16 * GB, 8 * GB), [gpu]))
    env.gate.clear()
    page = make_page(qtbot, env)
    try:
        panel = page.engine_panel
        assert panel.plan_label.text() == ("PyTorch 2.13 (NVIDIA CUDA) + diffusers + ONNX Runtime: about 7.5 GB on "
                                           "disk, 3.8 GB to download")
        assert panel.variant_label.text().startswith("Chosen for this computer: NVIDIA GeForce RTX 4090: uv picks "
                                                     "the CUDA build of PyTorch that its NVIDIA driver 570.86.10")
        assert panel.cpu_only_box.isVisible() and not panel.cpu_only_box.isChecked()
        panel.cpu_only_box.setChecked(True)
        assert panel.plan_label.text() == ("PyTorch 2.13 (CPU) + diffusers + ONNX Runtime: about 1.3 GB on disk, "
                                           "315 MB to download")
        assert panel.start_install()
        qtbot.waitUntil(lambda: bool(env.plans), timeout=5000)
        assert not panel.cpu_only_box.isEnabled()  # no change of mind halfway
        assert (env.plans[0].kind, env.plans[0].torch_backend) == ("cpu", "cpu")
        assert "onnxruntime==1.31.1" in env.plans[0].packages
        env.gate.set()
        qtbot.waitUntil(lambda: page.view.isVisible(), timeout=5000)
    finally:
        page.shutdown()


def test_install_progress_shows_the_bytes(qtbot, engine_missing):
    page = make_page(qtbot, FakeEnv())
    try:
        panel = page.engine_panel
        panel.running = True
        panel._on_progress(InstallProgress("install", "Downloading torch (191.8 MiB)…", 0.4,
                                           bytes_done=540_000_000, bytes_total=int(1.2 * GB)))
        assert panel.step_label.text() == "Downloading torch (191.8 MiB)… · 540 MB of about 1.2 GB"
        assert panel.progress_bar.value() == 400
        panel.running = False
    finally:
        page.shutdown()


def test_cancel_then_resume(qtbot, engine_missing):
    env = FakeEnv()
    env.gate.clear()
    page = make_page(qtbot, env)
    try:
        panel = page.engine_panel
        panel.start_install()
        qtbot.waitUntil(lambda: panel.progress_bar.value() == 300, timeout=5000)
        panel.cancel_install()
        assert panel.step_label.text() == "Cancelling…"
        qtbot.waitUntil(lambda: not panel.running, timeout=5000)
        assert panel.install_button.text() == "Resume install" and panel.install_button.isEnabled()
        assert panel.error_label.text() == "The install was cancelled. Resume it later, or remove it."
        assert panel.start_over_button.isVisible()
        assert not panel.progress_bar.isVisible()
        env.gate.set()
        panel.install_button.click()
        qtbot.waitUntil(lambda: page.view.isVisible(), timeout=5000)
        assert env.calls == ["install", "install"]
    finally:
        page.shutdown()


def test_failure_shows_the_error_and_retry(qtbot, engine_missing):
    env = FakeEnv()
    env.fail_next = EngineError(INSTALL_FAILED, "Installing PyTorch 2.13 (CPU) failed: Could not reach the package "
                                                "index (Request failed after 3 retries in 9.5s: failed to lookup "
                                                "address information: Name or service not known). Check the "
                                                "internet connection, or install from a folder of wheels.")
    page = make_page(qtbot, env)
    try:
        panel = page.engine_panel
        panel.install_button.click()
        qtbot.waitUntil(lambda: panel.error_label.isVisible(), timeout=5000)
        assert panel.error_label.text() == env.last_error
        assert panel.install_button.text() == "Retry" and panel.install_button.isEnabled()
        assert not page.controls.generate_button.isEnabled() and page.engine_panel.isVisible()
        panel.install_button.click()
        qtbot.waitUntil(lambda: page.view.isVisible(), timeout=5000)
        assert env.calls == ["install", "install"]
    finally:
        page.shutdown()


def test_a_failed_install_is_offered_again_after_a_restart(qtbot, engine_missing):
    env = FakeEnv("not_installed", reason="The last install failed: No Python was found.")
    page = make_page(qtbot, env)
    try:
        assert page.engine_panel.install_button.text() == "Retry"
        assert "No Python was found" in page.engine_panel.error_label.text()
    finally:
        page.shutdown()


def test_broken_engine_offers_repair(qtbot, engine_missing):
    env = FakeEnv("broken", reason="The image engine is damaged: importing the engine failed: ImportError: x. "
                                   "Repair it to install it again.")
    page = make_page(qtbot, env)
    try:
        panel = page.engine_panel
        assert panel.install_button.text() == "Repair" and not panel.start_over_button.isVisible()
        assert panel.error_label.text() == env.reason
        panel.install_button.click()
        qtbot.waitUntil(lambda: page.view.isVisible(), timeout=5000)
        assert env.calls == ["repair"]
    finally:
        page.shutdown()


def test_interrupted_install_offers_resume_and_start_over(qtbot, engine_missing):
    env = FakeEnv("broken", reason="The last install was interrupted while installing PyTorch.", resumable=True)
    page = make_page(qtbot, env)
    try:
        panel = page.engine_panel
        assert panel.install_button.text() == "Resume install" and panel.start_over_button.isVisible()
        panel.start_over_button.click()
        qtbot.waitUntil(lambda: page.view.isVisible(), timeout=5000)
        assert env.calls == ["repair"]
    finally:
        page.shutdown()


def test_ready_private_engine_can_be_removed(qtbot, engine_missing):
    env = FakeEnv("ready")
    page = make_page(qtbot, env)
    try:
        assert page.view.isVisible() and page.controls.generate_button.isEnabled()
        assert page.engine_line.isVisible()
        assert page.remove_engine(confirm=False)
        qtbot.waitUntil(lambda: page.engine_panel.isVisible(), timeout=5000)
        assert env.calls == ["remove"] and page.host.closed >= 1
        assert page.status_line.text() == "Image engine removed: 1.4 GB given back."
        assert not page.engine_line.isVisible() and page.engine_panel.install_box.isVisible()
        assert page.engine_panel.install_button.text() == "Install image engine"
    finally:
        page.shutdown()


def test_dev_checkout_shows_no_install(qtbot, monkeypatch):
    import desktop.pages.images_page as images_page

    monkeypatch.setattr(images_page, "image_engine_availability", lambda: Availability(True, "", "test"))
    page = make_page(qtbot, FakeEnv("host_has_it"))
    try:
        assert page.view.isVisible() and not page.engine_line.isVisible()
    finally:
        page.shutdown()


def test_app_starts_with_a_data_folder_with_spaces_and_umlauts(qtbot, monkeypatch, tmp_path, engine_missing):
    """The real ImageEngineEnv under ``…/Über Ordner/ä b``: the page opens and offers the install."""
    monkeypatch.setenv("ATELIER_HOME", str(tmp_path / "Über Ordner" / "ä b"))
    monkeypatch.setenv("ATELIER_IMAGE_ENGINE_ENV", "private")  # as in a bundle without torch
    from desktop.main_window import MainWindow

    window = MainWindow(open_workspace())
    qtbot.addWidget(window)
    window.show()
    try:
        page = window.images_page
        assert page.engine_env.root == tmp_path / "Über Ordner" / "ä b" / "data" / "engines" / "image"
        assert page.engine_env.status().state == "not_installed"
        window.show_page("Images")
        assert page.engine_panel.install_box.isVisibleTo(page)
        assert page.engine_panel.plan_label.text() == make_plan(probe()).summary()  # this machine's build
    finally:
        window.close()
