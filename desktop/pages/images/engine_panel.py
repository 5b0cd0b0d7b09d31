"""What the Images page shows when the image engine cannot run here, and the install that fixes it.

:class:`EngineMissingPanel` says why (a banner), and when a private image
engine can be installed (:mod:`engines.envs`) it offers it: the plan with
its sizes, an optional folder of wheels, the CPU build instead of a GPU one
(much smaller), Install, a progress bar with the current step and Cancel,
and after a failure the error with Retry. An interrupted install offers
Resume and Start over; a damaged one Repair.
:class:`EngineEnvLine` is the small line under the image when a private
engine is in use, with "Remove image engine (frees X GB)".

The install runs in :class:`desktop.workers.engine_install_worker.EngineInstallWorker`
on its own thread; the panel only shows states and forwards clicks.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from desktop.workers.engine_install_worker import EngineInstallWorker, start_install_thread
from engines.byte_sizes import format_bytes
from engines.errors import ErrorKind

CANCELLED_KIND = ErrorKind.CANCELLED


def _label(text: str = "", name: str = "Muted", selectable: bool = False) -> QLabel:
    label = QLabel(text)
    label.setObjectName(name)
    label.setWordWrap(True)
    label.setAlignment(Qt.AlignCenter)
    if selectable:
        label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    return label


class EngineMissingPanel(QFrame):
    """A centred heading, the reason in a banner, and the image-engine install when one is possible."""

    installed = Signal(object)  # EnvStatus: the private engine is ready
    removed = Signal(int)  # bytes given back by remove_engine()
    remove_failed = Signal(str)  # the reason, in words
    _install = Signal(object)  # plan, to the worker thread
    _repair = Signal(object)
    _remove = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("EngineMissing")
        self.env = None
        self.status = None
        self.plan = None
        self.wheel_dir: str | None = None
        self.running = False
        self._operation = ""  # "install" or "remove" while running
        self._worker: EngineInstallWorker | None = None
        self._thread = None
        row = QHBoxLayout(self)
        box = QWidget()  # wrapped labels need a width to wrap at: at most 640 px, centred
        box.setMaximumWidth(640)
        box.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        row.addStretch(1)
        row.addWidget(box, 100)
        row.addStretch(1)
        layout = QVBoxLayout(box)
        layout.addStretch(1)
        heading = QLabel("Images need the image engine")
        heading.setObjectName("PageTitle")
        heading.setAlignment(Qt.AlignCenter)
        layout.addWidget(heading)
        self.message = _label(name="Banner", selectable=True)
        layout.addWidget(self.message)
        self.hint = _label("Making images needs PyTorch and diffusers (or ONNX Runtime) next to Atelier. "
                           "Your gallery below still works.")
        layout.addWidget(self.hint)
        self.install_box = self._build_install_box()
        layout.addWidget(self.install_box)
        self.install_box.hide()
        layout.addStretch(1)

    def _build_install_box(self) -> QWidget:
        box = QWidget()
        col = QVBoxLayout(box)
        col.setContentsMargins(0, 12, 0, 0)
        col.setSpacing(8)
        self.plan_label = _label(name="")
        col.addWidget(self.plan_label)
        self.variant_label = _label()
        col.addWidget(self.variant_label)
        wheels = QHBoxLayout()
        wheels.addStretch(1)
        self.wheels_button = QPushButton("Use a folder of wheels…")
        self.wheels_button.setToolTip("Without internet: install from a folder of .whl files downloaded elsewhere "
                                      "(pip download on a connected machine).")
        self.wheels_button.clicked.connect(self.choose_wheel_dir)
        wheels.addWidget(self.wheels_button)
        self.wheels_clear = QPushButton("Use the internet instead")
        self.wheels_clear.clicked.connect(lambda: self.set_wheel_dir(None))
        self.wheels_clear.hide()
        wheels.addWidget(self.wheels_clear)
        wheels.addStretch(1)
        col.addLayout(wheels)
        self.wheels_label = _label(selectable=True)
        self.wheels_label.hide()
        col.addWidget(self.wheels_label)
        cpu_row = QHBoxLayout()
        cpu_row.addStretch(1)
        self.cpu_only_box = QCheckBox("Install the CPU build instead (a much smaller download)")
        self.cpu_only_box.setToolTip("PyTorch without GPU support: slower images, but a fraction of the download "
                                     "and disk space, and it works with any driver.")
        self.cpu_only_box.toggled.connect(lambda _on: self._refresh_plan())
        self.cpu_only_box.hide()
        cpu_row.addWidget(self.cpu_only_box)
        cpu_row.addStretch(1)
        col.addLayout(cpu_row)
        self.error_label = _label(name="Banner", selectable=True)
        self.error_label.hide()
        col.addWidget(self.error_label)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setFixedHeight(8)
        self.progress_bar.hide()
        col.addWidget(self.progress_bar)
        self.step_label = _label(name="StatusLine")
        self.step_label.hide()
        col.addWidget(self.step_label)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.install_button = QPushButton("Install image engine")
        self.install_button.setObjectName("Primary")
        self.install_button.clicked.connect(self.start_install)
        buttons.addWidget(self.install_button)
        self.start_over_button = QPushButton("Start over")
        self.start_over_button.setToolTip("Delete what the unfinished install left and install again.")
        self.start_over_button.clicked.connect(self.start_repair)
        self.start_over_button.hide()
        buttons.addWidget(self.start_over_button)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_install)
        self.cancel_button.hide()
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        col.addLayout(buttons)
        return box

    # ---- state -----------------------------------------------------------------------------

    def set_reason(self, reason: str) -> None:
        self.message.setText(f"The image engine is not installed: {reason}")

    def set_env(self, env) -> None:
        """The :class:`engines.envs.ImageEngineEnv` (or a stand-in) this panel installs."""
        self.env = env

    def show_status(self, status) -> None:
        """Show what can be done for *status* (an EnvStatus; None: nothing can be installed)."""
        self.status = status
        if self.running:
            return
        if status is None or self.env is None or status.state in ("host_has_it", "ready"):
            self.install_box.hide()
            return
        self.install_box.show()
        self.hint.setText("Atelier can install it for you into its own folder; nothing else on your computer "
                          "changes. Your gallery below still works.")
        self._refresh_plan()
        self.progress_bar.hide()
        self.step_label.hide()
        self.cancel_button.hide()
        self._set_error(status.reason if status.state == "broken" or status.reason else "")
        busy = status.state == "installing"
        self.install_button.setEnabled(not busy)
        self.wheels_button.setEnabled(not busy)
        self.cpu_only_box.setEnabled(not busy)
        self.start_over_button.setVisible(status.state == "broken" and status.resumable)
        if busy:
            self.install_button.setText("Installing elsewhere…")
            self._set_error("Another Atelier window is installing the image engine. Wait for it to finish.")
        elif status.state == "broken":
            self.install_button.setText("Resume install" if status.resumable else "Repair")
        elif status.reason:
            self.install_button.setText("Retry")
        else:
            self.install_button.setText("Install image engine")

    def _refresh_plan(self) -> None:
        if self.plan is None:
            try:
                self.plan = self.env.plan()
            except Exception as exc:  # noqa: BLE001 - a probe failure must not break the page
                self._set_error(f"Could not work out what to install: {exc}")
                return
        self.cpu_only_box.setVisible(self.plan.kind != "cpu")
        plan = self._chosen(self.plan)
        self.plan_label.setText(plan.summary())
        self.variant_label.setText(f"Chosen for this computer: {plan.reason}" if plan.reason else "")
        self.variant_label.setVisible(bool(plan.reason))
        self.wheels_label.setText(f"From the folder {self.wheel_dir}" if self.wheel_dir else "")
        self.wheels_label.setVisible(bool(self.wheel_dir))
        self.wheels_clear.setVisible(bool(self.wheel_dir))

    def current_plan(self):
        if self.plan is None:
            self._refresh_plan()
        if self.plan is None:
            return None
        return self._chosen(self.plan)

    def _chosen(self, plan):
        """*plan* with the folder of wheels and the user's CPU-build choice applied."""
        plan = plan.with_wheel_dir(self.wheel_dir)
        return plan.cpu_only() if self.cpu_only_box.isChecked() else plan

    def _set_error(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))

    # ---- actions ---------------------------------------------------------------------------

    def choose_wheel_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder with the image engine's wheels (.whl files)",
                                                str(Path.home()))
        if path:
            self.set_wheel_dir(path)

    def set_wheel_dir(self, path: str | None) -> None:
        self.wheel_dir = path or None
        self._refresh_plan()

    def start_install(self) -> bool:
        """Install, or resume an unfinished install; a damaged engine is repaired instead."""
        if self.status is not None and self.status.state == "broken" and not self.status.resumable:
            return self.start_repair()
        return self._start(self._install)

    def start_repair(self) -> bool:
        return self._start(self._repair)

    def _start(self, signal) -> bool:
        plan = self.current_plan()
        if self.running or self.env is None or plan is None:
            return False
        self._ensure_worker()
        self.running = True
        self._operation = "install"
        self._set_error("")
        self.install_button.setEnabled(False)
        self.install_button.setText("Installing…")
        self.start_over_button.hide()
        self.wheels_button.setEnabled(False)
        self.wheels_clear.setEnabled(False)
        self.cpu_only_box.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.cancel_button.show()
        self.progress_bar.setRange(0, 0)  # busy until the first step reports
        self.progress_bar.show()
        self.step_label.setText("Starting…")
        self.step_label.show()
        signal.emit(plan)
        return True

    def cancel_install(self) -> None:
        if self.running and self._worker is not None:
            self._worker.cancel()
            self.cancel_button.setEnabled(False)
            self.step_label.setText("Cancelling…")

    def remove_engine(self) -> bool:
        """Delete the private engine on the worker thread; ``removed`` or ``remove_failed`` follows."""
        if self.running or self.env is None:
            return False
        self._ensure_worker()
        self.running = True
        self._operation = "remove"
        self._remove.emit()
        return True

    # ---- worker ----------------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._worker is not None and self._worker.env is self.env:
            return
        self.shutdown()
        self._worker = EngineInstallWorker(self.env)
        self._thread = start_install_thread(self._worker)
        self._install.connect(self._worker.install)
        self._repair.connect(self._worker.repair)
        self._remove.connect(self._worker.remove)
        self._worker.progress.connect(self._on_progress)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._worker.removed.connect(self._on_removed)

    def _on_progress(self, progress) -> None:
        if not self.running:
            return
        if progress.fraction is None:
            self.progress_bar.setRange(0, 0)
        else:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(progress.fraction * 1000))
        detail = progress.message
        if progress.packages_total:
            detail += f" · {progress.packages_done}/{progress.packages_total} packages"
        elif progress.bytes_total:
            detail += f" · {format_bytes(progress.bytes_done)} of about {format_bytes(progress.bytes_total)}"
        self.step_label.setText(detail)

    def _on_finished(self, status) -> None:
        self.running = False
        self._operation = ""
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(1000)
        self.cancel_button.hide()
        self.wheels_button.setEnabled(True)
        self.wheels_clear.setEnabled(True)
        self.cpu_only_box.setEnabled(True)
        self.install_button.setEnabled(True)
        self.step_label.setText(f"Installed ({format_bytes(status.size_bytes)})." if status.size_bytes else "Installed.")
        self.installed.emit(status)

    def _on_failed(self, kind: str, message: str) -> None:
        was_remove = self._operation == "remove"
        self.running = False
        self._operation = ""
        self.wheels_clear.setEnabled(True)
        if was_remove:
            self.remove_failed.emit(message)
            return
        status = self._safe_status()
        self.show_status(status)
        if kind == CANCELLED_KIND:
            self._set_error(message)
            self.install_button.setText("Resume install" if status is not None and status.resumable
                                        else "Install image engine")
        else:
            if kind == ErrorKind.OFFLINE:
                message += " Or install from a folder of wheels."
            self._set_error(message)
            if status is None or status.state != "broken" or status.resumable:
                self.install_button.setText("Retry")

    def _on_removed(self, freed: int) -> None:
        self.running = False
        self._operation = ""
        self.plan = None
        self.removed.emit(freed)

    def _safe_status(self):
        try:
            return self.env.status()
        except Exception:  # noqa: BLE001
            return self.status

    def shutdown(self, timeout_ms: int = 15000) -> None:
        """Cancel a running install and stop the worker thread. Safe to call twice."""
        if self._worker is not None:
            self._worker.cancel()
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait(timeout_ms)
        self._worker = None
        self._thread = None


class EngineEnvLine(QWidget):
    """"Image engine: PyTorch 2.13.0+cpu in Atelier's folder (1.4 GB) · Remove image engine (frees 1.4 GB)"."""

    remove_requested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel()
        self.label.setObjectName("Muted")
        row.addWidget(self.label, 1)
        self.remove_button = QPushButton("Remove image engine")
        self.remove_button.setToolTip("Delete Atelier's private PyTorch, diffusers and ONNX Runtime. "
                                      "You can install them again later; your images stay.")
        self.remove_button.clicked.connect(self.remove_requested)
        row.addWidget(self.remove_button)
        self.hide()

    def show_status(self, status) -> None:
        if status is None or status.state != "ready":
            self.hide()
            return
        torch = (status.versions or {}).get("torch") or (status.plan.label if status.plan else "PyTorch")
        size = format_bytes(status.size_bytes) if status.size_bytes else ""
        self.label.setText(f"Image engine: PyTorch {torch} in Atelier's own folder" if "PyTorch" not in torch
                           else f"Image engine: {torch} in Atelier's own folder")
        self.remove_button.setText(f"Remove image engine (frees {size})" if size else "Remove image engine")
        self.show()
