"""The Downloads tab: one row per job of the download queue, with its controls.

The queue calls its subscribers from worker threads. :class:`QueueBridge`
turns each call into a queued Qt signal; the tab collects the changes and
repaints at most five times a second (state changes included: 200 ms is
invisible, a repaint per progress tick from two parallel downloads is not).
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.pages.models.verdict_view import fmt_speed
from desktop.widgets.labels import banner_label
from desktop.widgets.scroll_area import scroll_area, transparent_body
from engines.byte_sizes import format_bytes
from engines.durations import format_duration
from engines.errors import EngineError
from engines.library.download.queue import DownloadJob, DownloadQueue

REPAINT_MS = 200
ACTIVE = ("queued", "running")
STATE_WORDS = {"queued": "Waiting", "running": "Downloading", "paused": "Paused", "failed": "Failed",
               "completed": "Done", "cancelled": "Cancelled"}
# Which buttons each state offers.
ACTIONS = {
    "queued": ("pause", "cancel"),
    "running": ("pause", "cancel"),
    "paused": ("resume", "cancel"),
    "failed": ("retry", "remove"),
    "cancelled": ("retry", "remove"),
    "completed": ("remove",),
}


class QueueBridge(QObject):
    """Subscribed to the queue; re-emits each change on the GUI thread."""

    changed = Signal(str, object)  # job id, DownloadJob or None (removed)

    def __init__(self, queue: DownloadQueue, parent=None) -> None:
        super().__init__(parent)
        self._unsubscribe = queue.subscribe(self._on_change)
        self._closed = threading.Event()

    def _on_change(self, job_id: str, job: DownloadJob | None) -> None:  # any thread
        if not self._closed.is_set():
            self.changed.emit(job_id, job)

    def close(self) -> None:
        self._closed.set()
        self._unsubscribe()


class JobRow(QFrame):
    action = Signal(str, str)  # verb, job id

    def __init__(self, job: DownloadJob, parent=None, elsewhere: bool = False) -> None:
        super().__init__(parent)
        self.setObjectName("DownloadRow")
        self.setStyleSheet("QFrame#DownloadRow { border: 1px solid palette(mid); border-radius: 8px;"
                           " background: palette(base); }")
        self.job = job
        grid = QGridLayout(self)
        grid.setContentsMargins(14, 10, 14, 10)
        grid.setHorizontalSpacing(16)
        grid.setVerticalSpacing(4)
        self.name = QLabel(job.name)
        self.name.setStyleSheet("font-weight: 600; border: none; background: transparent;")
        self.state = QLabel()
        self.state.setStyleSheet("border: none; background: transparent;")
        self.state.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(8)
        self.progress.setStyleSheet(
            "QProgressBar { border: none; border-radius: 4px; background: palette(midlight); }"
            " QProgressBar::chunk { border-radius: 4px; background: palette(highlight); }")
        self.detail = QLabel()
        self.detail.setObjectName("Muted")
        self.detail.setStyleSheet("border: none; background: transparent;")
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.error.setStyleSheet("color: #d64545; border: none; background: transparent;")
        grid.addWidget(self.name, 0, 0)
        grid.addWidget(self.state, 0, 1)
        grid.addWidget(self.progress, 1, 0, 1, 2)
        grid.addWidget(self.detail, 2, 0, 1, 2)
        grid.addWidget(self.error, 3, 0, 1, 2)
        grid.setColumnStretch(0, 1)

        buttons = QHBoxLayout()
        buttons.setSpacing(6)
        self.buttons: dict[str, QPushButton] = {}
        for verb in ("pause", "resume", "retry", "cancel", "remove"):
            button = QPushButton(verb.capitalize())
            button.setMinimumWidth(76)
            button.clicked.connect(lambda _=False, v=verb: self.action.emit(v, self.job.id))
            buttons.addWidget(button)
            self.buttons[verb] = button
        self.pause_button, self.resume_button = self.buttons["pause"], self.buttons["resume"]
        self.retry_button, self.cancel_button, self.remove_button = (self.buttons[v] for v in ("retry", "cancel", "remove"))
        grid.addLayout(buttons, 0, 2, 3, 1, Qt.AlignVCenter)
        self.update_job(job, elsewhere)

    def update_job(self, job: DownloadJob, elsewhere: bool = False) -> None:
        """Show *job*; *elsewhere*: another Atelier process runs it, so it is shown, followed, never controlled."""
        self.job = job
        self.name.setText(job.name)
        self.state.setText(STATE_WORDS.get(job.state, job.state))
        allowed = () if elsewhere else ACTIONS.get(job.state, ())
        for verb, button in self.buttons.items():
            button.setVisible(verb in allowed)
        if job.bytes_total:
            share = min(job.bytes_done, job.bytes_total) / job.bytes_total
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * share))
            amount = f"{int(100 * share)}% · {format_bytes(job.bytes_done)} of {format_bytes(job.bytes_total)}"
        elif job.state == "running":
            self.progress.setRange(0, 0)  # size unknown yet: a busy bar
            amount = f"{format_bytes(job.bytes_done)} so far"
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(1000 if job.state == "completed" else 0)
            amount = format_bytes(job.bytes_done) if job.bytes_done else ""
        parts = [amount] if amount else []
        if job.state == "running":
            parts.append(fmt_speed(job.speed_bps))
            if job.eta_s is not None:
                parts.append(f"{format_duration(job.eta_s, precise=True)} left")
        elif job.state == "completed":
            parts.append("installed")
        if elsewhere:
            parts.append("in another Atelier window or command")
        self.detail.setText(" · ".join(p for p in parts if p and p != "—"))
        self.detail.setVisible(bool(self.detail.text()))
        self.error.setText(job.error or "")
        self.error.setVisible(bool(job.error))


class DownloadsTab(QWidget):
    active_count_changed = Signal(int)
    jobs_changed = Signal()  # after each repaint batch
    job_completed = Signal(object)  # DownloadJob that finished while the page was watching

    def __init__(self, queue: DownloadQueue, parent=None) -> None:
        super().__init__(parent)
        self.queue = queue
        self.rows: dict[str, JobRow] = {}
        self._pending: dict[str, DownloadJob | None] = {}
        self._active = -1
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 12, 0, 0)
        layout.setSpacing(8)
        self.banner = banner_label()
        layout.addWidget(self.banner)
        self.empty = QLabel("No downloads. Pick a model in the Catalog tab, or search Hugging Face there.")
        self.empty.setObjectName("Muted")
        layout.addWidget(self.empty)
        body = transparent_body("DownloadsBody")
        self.list_layout = QVBoxLayout(body)
        self.list_layout.setContentsMargins(0, 0, 4, 0)
        self.list_layout.setSpacing(8)
        self.list_layout.addStretch(1)
        layout.addWidget(scroll_area(body, sideways=True), 1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REPAINT_MS)
        self._timer.timeout.connect(self.flush)
        self.bridge = QueueBridge(queue, self)
        self.bridge.changed.connect(self._queue_changed, Qt.QueuedConnection)
        for job in queue.jobs():  # jobs reloaded from the state file, or added before the page
            self._apply(job.id, job)
        self._update_count()
        if queue.problems:  # a damaged download list set aside, refused jobs, orphaned partial files
            self.banner.setText(" ".join(queue.problems))
            self.banner.show()

    # ---- queue events ----------------------------------------------------

    def _queue_changed(self, job_id: str, job: DownloadJob | None) -> None:
        self._pending[job_id] = job
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Apply the changes collected since the last repaint."""
        pending, self._pending = self._pending, {}
        for job_id, job in pending.items():
            previous = self.rows[job_id].job.state if job_id in self.rows else None
            self._apply(job_id, job)
            if job is not None and job.state == "completed" and previous != "completed":
                self.job_completed.emit(job)
        self._update_count()
        if pending:
            self.jobs_changed.emit()

    def add_job(self, job: DownloadJob) -> None:
        """Show a job at once (the queue's own event follows)."""
        if job.id not in self.rows:
            self._apply(job.id, job)
            self._update_count()

    def _apply(self, job_id: str, job: DownloadJob | None) -> None:
        row = self.rows.get(job_id)
        if job is None:
            if row is not None:
                del self.rows[job_id]
                row.setParent(None)
                row.deleteLater()
        elif row is None:
            row = JobRow(job, elsewhere=self.queue.runs_elsewhere(job_id))
            row.action.connect(self._act)
            self.rows[job_id] = row
            self.list_layout.insertWidget(0, row)  # newest first
        else:
            row.update_job(job, self.queue.runs_elsewhere(job_id))
        self.empty.setVisible(not self.rows)

    def _update_count(self) -> None:
        active = sum(1 for row in self.rows.values() if row.job.state in ACTIVE)
        if active != self._active:
            self._active = active
            self.active_count_changed.emit(active)

    @property
    def active_count(self) -> int:
        return max(0, self._active)

    # ---- buttons ---------------------------------------------------------

    def _act(self, verb: str, job_id: str) -> None:
        self.banner.hide()
        try:
            job = getattr(self.queue, verb)(job_id)
        except EngineError as exc:
            self.banner.setText(exc.message)
            self.banner.show()
            return
        if verb == "remove":
            self._apply(job_id, None)
        else:
            self._apply(job_id, self.queue.get(job_id) or job)
        self._update_count()

    def shutdown(self) -> None:
        self._timer.stop()
        self.bridge.close()
