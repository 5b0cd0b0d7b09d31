"""The Models page: this machine in one line, then Catalog, Installed and Downloads.

Layout and wiring only: every rule (what fits, what a download may do,
what removing deletes) lives in :class:`engines.library.service.ModelLibrary`,
and what is recommended and how fast each model will run in
:class:`engines.library.advisor.Advisor`. Anything that touches the disk,
the hardware or the network runs on a pool thread; results come back
through queued signals. "Help me choose…" opens the first-run dialog again.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QTabWidget, QVBoxLayout, QWidget

from desktop.pages.models.catalog_tab import CatalogTab
from desktop.pages.models.downloads_tab import DownloadsTab
from desktop.pages.models.installed_tab import InstalledTab
from desktop.workers.background import BackgroundTask, run_in_background, serial_pool, wait_for_background
from engines.byte_sizes import format_bytes
from engines.errors import EngineError
from engines.library.advisor import Advisor, CatalogAdvice
from engines.machine.hardware import HardwareReport
from engines.library.measured_speeds import record_download_rate
from engines.library.service import ModelLibrary

log = logging.getLogger(__name__)
REGISTRATION_WAIT_MS = 100  # a finished download is registered just after the queue reports it
REGISTRATION_TRIES = 50


def machine_summary(report: HardwareReport, resources=None, machine=None) -> str:
    """"AMD EPYC · 2 cores · 24.7 GB free of 25.3 GB · 19 GB/s · no supported GPU · 81.9 GB free disk"."""
    parts = [report.cpu.name, f"{report.cpu.physical_cores} cores",
             f"{format_bytes(report.memory.available_bytes)} free of {format_bytes(report.memory.total_bytes)}"]
    if machine is not None:
        parts.append(f"{machine.memory_bandwidth / 1e9:.0f} GB/s memory")
    gpu = next(iter(report.gpus), None)
    if gpu is None:
        parts.append("no supported GPU")
    elif gpu.unified_memory:
        parts.append(f"{gpu.name} (shared memory)")
    else:
        free = f" ({format_bytes(gpu.free_bytes)} free)" if gpu.free_bytes else ""
        usable = resources is None or resources.gpu_name
        parts.append(f"{gpu.name}{free}" + ("" if usable else " · chat runs on the CPU (no GPU build of llama.cpp)"))
    if report.disk is not None:
        parts.append(f"{format_bytes(report.disk.free_bytes)} free disk")
    return " · ".join(parts)


class ModelsPage(QWidget):
    model_installed = Signal(str)  # model id: downloaded, or added with "Add model file…"
    model_removed = Signal(str)  # model id
    advice_ready = Signal(object)  # CatalogAdvice, after each machine check

    def __init__(self, library: ModelLibrary, parent=None) -> None:
        super().__init__(parent)
        self.library = library
        self.advisor = Advisor(library)
        self.advice: CatalogAdvice | None = None  # None until the first machine check is done
        self.pool = serial_pool("models-page")  # hardware, scans, verdicts: one at a time
        self._tasks: list[BackgroundTask] = []
        self._closed = False
        self._download_speeds: dict[str, float] = {}  # job id -> last speed seen while it ran
        self.welcome = None  # the first-run dialog, once opened

        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 16, 24, 12)
        layout.setSpacing(4)
        header = QHBoxLayout()
        title = QLabel("Models")
        title.setObjectName("PageTitle")
        header.addWidget(title)
        header.addSpacing(12)
        self.summary = QLabel("Checking this machine…")
        self.summary.setObjectName("Muted")
        self.summary.setWordWrap(True)
        header.addWidget(self.summary, 1)
        self.choose_button = QPushButton("Help me choose…")
        self.choose_button.setToolTip("The model recommended for this machine, with its size, download time and speed")
        self.choose_button.clicked.connect(self.show_welcome)
        header.addWidget(self.choose_button)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Measure free memory, GPU and disk again, and recheck every model")
        self.refresh_button.clicked.connect(self.refresh)
        header.addWidget(self.refresh_button)
        layout.addLayout(header)

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.tabBar().setDrawBase(False)
        self.tabs.setStyleSheet(
            "QTabBar::tab { padding: 7px 16px; margin-right: 4px; border: none; background: transparent;"
            " border-bottom: 2px solid transparent; }"
            " QTabBar::tab:selected { border-bottom: 2px solid palette(highlight); font-weight: 600; }"
            " QTabBar::tab:hover:!selected { border-bottom: 2px solid palette(mid); }"
            " QTabWidget::pane { border: none; border-top: 1px solid palette(mid); }")
        self.catalog_tab = CatalogTab(library)
        self.installed_tab = InstalledTab(library, self.pool, advisor=self.advisor)
        self.catalog_tab.hub.advisor = self.advisor
        try:
            queue = library.queue()
        except (EngineError, OSError) as exc:  # the models folder or the queue's state file is unusable
            queue = None
            self.catalog_tab.show_error(getattr(exc, "message", None) or str(exc))
        self.downloads_tab = DownloadsTab(queue) if queue is not None else None
        self.tabs.addTab(self.catalog_tab, "Catalog")
        self.tabs.addTab(self.installed_tab, "Installed")
        if self.downloads_tab is not None:
            self.tabs.addTab(self.downloads_tab, "Downloads")
        layout.addWidget(self.tabs, 1)

        self.catalog_tab.job_added.connect(self._job_added)
        self.installed_tab.models_changed.connect(self.catalog_tab.refresh_states)
        self.installed_tab.model_added.connect(self.model_installed)
        self.installed_tab.model_removed.connect(self.model_removed)
        if self.downloads_tab is not None:
            self.downloads_tab.active_count_changed.connect(self._set_download_count)
            self.downloads_tab.job_completed.connect(self._download_completed)
            self.downloads_tab.jobs_changed.connect(self.catalog_tab.refresh_job_state)
            self.downloads_tab.jobs_changed.connect(self._note_download_speeds)
            self._set_download_count(self.downloads_tab.active_count)
        self.tabs.currentChanged.connect(self._tab_changed)
        self._check_machine(refresh=False)

    # ---- machine and verdicts --------------------------------------------

    def refresh(self) -> None:
        """Re-probe the hardware, then recompute every verdict and rescan the models folder."""
        self.summary.setText("Checking this machine…")
        self._check_machine(refresh=True)  # then the Installed tab rescans, with the new numbers

    def _check_machine(self, refresh: bool) -> None:
        library, advisor = self.library, self.advisor

        def work():
            report = library.hardware(refresh=refresh)
            resources = library.resources()
            advice = advisor.catalog_advice(remeasure=refresh)  # measures the machine's speed once (cached on disk)
            return report, resources, advice

        self.refresh_button.setEnabled(False)
        self._tasks = [t for t in self._tasks if not t.finished]
        self._tasks.append(run_in_background(work, self._machine_checked, self._machine_failed, pool=self.pool))

    def _machine_checked(self, result) -> None:
        report, resources, advice = result
        self.advice = advice
        self.refresh_button.setEnabled(True)
        self.summary.setText(machine_summary(report, resources, advice.machine))
        self.catalog_tab.set_resources(resources)
        self.catalog_tab.set_advice(advice)
        if self.installed_tab.loaded:
            self._refresh_installed()
        self.advice_ready.emit(advice)

    def _machine_failed(self, error) -> None:
        self.refresh_button.setEnabled(True)
        self.summary.setText("Could not measure this machine: " + (error.message if isinstance(error, EngineError) else str(error)))

    # ---- tabs ------------------------------------------------------------

    def _tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is self.installed_tab:
            self.installed_tab.refresh()

    def _refresh_installed(self) -> None:
        """Rescan now if the Installed tab is showing; otherwise opening it rescans."""
        if self.tabs.currentWidget() is self.installed_tab:
            self.installed_tab.refresh()

    def _set_download_count(self, count: int) -> None:
        if self.downloads_tab is not None:
            index = self.tabs.indexOf(self.downloads_tab)
            self.tabs.setTabText(index, f"Downloads ({count})" if count else "Downloads")

    def _job_added(self, job) -> None:
        if self.downloads_tab is not None:
            self.downloads_tab.add_job(job)

    def _note_download_speeds(self) -> None:
        for job_id, row in self.downloads_tab.rows.items():
            if row.job.state == "running" and row.job.speed_bps > 0:
                self._download_speeds[job_id] = row.job.speed_bps

    def _download_completed(self, job) -> None:
        speed = self._download_speeds.pop(job.id, 0.0)
        if speed > 0:  # kept for the next download-time estimate ("at your last download's speed")
            path = self.advisor.speeds_path
            self._tasks.append(run_in_background(lambda: record_download_rate(path, speed), None,
                                                 lambda e: log.warning("could not keep the download rate: %s", e)))
        self._announce(job.model_id, REGISTRATION_TRIES)

    def _announce(self, model_id: str, tries: int) -> None:
        """Emit model_installed once the library has registered the finished download."""
        if self._closed:
            return
        if self.library.models.get(model_id) is None and tries > 0:
            QTimer.singleShot(REGISTRATION_WAIT_MS, lambda: self._announce(model_id, tries - 1))
            return
        self.catalog_tab.refresh_states()
        self._refresh_installed()
        if self.library.models.get(model_id) is not None:
            self.model_installed.emit(model_id)

    # ---- first run -------------------------------------------------------

    def show_welcome(self):
        """Open the first-run dialog: the recommended model for this machine, the offline choices, privacy."""
        from desktop.pages.models.first_run import WelcomeDialog

        if self.welcome is None:
            self.welcome = WelcomeDialog(self, self.window())
        self.welcome.show()
        self.welcome.raise_()
        self.welcome.activateWindow()
        return self.welcome

    # ---- lifetime --------------------------------------------------------

    def shutdown(self, stop_downloads: bool = True) -> None:
        """Stop listening and drop pending results; with *stop_downloads*, stop the queue too
        (running jobs are saved and resume at the next start)."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self.welcome is not None:
            self.welcome.shutdown()
        self.catalog_tab.shutdown()
        self.installed_tab.shutdown()
        if self.downloads_tab is not None:
            self.downloads_tab.shutdown()
        if stop_downloads:
            self.library.shutdown()

    def wait_idle(self, timeout_ms: int = 10_000) -> bool:
        """Wait for the page's disk and hardware work (tests, screenshots)."""
        return wait_for_background(timeout_ms, self.pool)
