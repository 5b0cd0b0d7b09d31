"""The first-run dialog: one recommended model for this machine, one click to get it, and what stays private.

A new user's first chat used to be with the bundled demo, Gemma 3 270M: a
base model that rambles instead of answering. So on the very first start
Atelier offers the one instruction-tuned model that suits *this* machine
(:func:`engines.library.recommend.recommend`), with its size, the download
time (at the last download's measured rate, or a typical 50 Mbit/s one,
and it says which), whether it fits, and how fast it will write. One
click downloads it; the dialog follows the download and shows a failure
with Retry where the user clicked.

Offline (offline mode on, or no connection found by one quick check) it
says what to do instead: add a GGUF file they already have, or turn
offline mode off. It keeps the demo as the offline stand-in and says
plainly that it is a base model. A privacy note says what can connect and
when. The dialog is shown once (``Settings.first_run_done``) and stays
reachable from the Models page ("Help me choose…").
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.pages.models.verdict_view import dot_html, fmt_parameters
from desktop.privacy import offline_mode_on, privacy_html
from desktop.widgets.labels import banner_label
from desktop.widgets.scroll_area import scroll_area
from desktop.workers.background import BackgroundTask, run_in_background
from engines.byte_sizes import format_bytes
from engines.errors import EngineError

DEMO_NOTE = ("Until then, the built-in demo, Gemma 3 270M, works offline. It is a <b>base model</b>: it continues "
             "text instead of following instructions, so its answers ramble. It is there to try the app, not to "
             "rely on.")
OFFLINE_STEPS = ("<ul style='margin-left:-20px'>"
                 "<li>Add a GGUF model file you already have: Models → Installed → <i>Add model file…</i>, "
                 "or drop the file onto the window.</li>"
                 "<li>Or turn offline mode off in Settings, then come back here (Models → <i>Help me choose…</i>).</li>"
                 "</ul>")


def show_first_run(window) -> None:
    """Open the dialog once per profile, the first time the window is shown (desktop/app.py calls this)."""
    workspace = window.workspace
    if workspace.settings.first_run_done:
        return
    workspace.settings.first_run_done = True
    try:
        workspace.save_settings()
    except OSError:  # a read-only profile: the dialog shows again next time, nothing worse
        pass
    window.ensure_models_page().show_welcome()


class WelcomeDialog(QDialog):
    """Non-modal: the user can look around the app while the model downloads."""

    def __init__(self, page, parent=None) -> None:
        super().__init__(parent)
        self.page = page
        self.entry = None  # the recommended CatalogEntry
        self.job_id: str | None = None
        self._check: BackgroundTask | None = None
        self.reachable: bool | None = None  # None: not checked yet
        self.unreachable_reason = ""
        self.setWindowTitle("Welcome to Atelier")
        self.setModal(False)
        self.resize(600, 560)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 12)
        body = QWidget()
        outer.addWidget(scroll_area(body), 1)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(24, 20, 24, 8)
        layout.setSpacing(10)

        title = QLabel("Welcome to Atelier")
        title.setObjectName("PageTitle")
        layout.addWidget(title)
        intro = QLabel("Atelier runs AI models on this computer. To chat, you need a model that follows "
                       "instructions. This one suits your machine best:")
        intro.setWordWrap(True)
        layout.addWidget(intro)

        self.card = QFrame()
        self.card.setObjectName("WelcomeCard")
        self.card.setStyleSheet("QFrame#WelcomeCard { border: 1px solid palette(mid); border-radius: 8px;"
                                " background: palette(base); }")
        card = QVBoxLayout(self.card)
        card.setContentsMargins(16, 12, 16, 12)
        card.setSpacing(6)
        self.name = QLabel("Checking this machine…")
        self.name.setStyleSheet("font-size: 16px; font-weight: 600; border: none;")
        self.name.setWordWrap(True)
        self.facts = QLabel()
        self.facts.setTextFormat(Qt.RichText)
        self.facts.setWordWrap(True)
        self.facts.setStyleSheet("border: none;")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(8)
        self.progress.hide()
        self.state = QLabel()
        self.state.setObjectName("Muted")
        self.state.setWordWrap(True)
        self.state.setStyleSheet("border: none;")
        self.state.hide()
        self.failure = banner_label()
        buttons = QHBoxLayout()
        self.download_button = QPushButton("Download")
        self.download_button.setObjectName("Primary")
        self.download_button.setEnabled(False)
        self.download_button.clicked.connect(self.download)
        self.add_file_button = QPushButton("Add a model file…")
        self.add_file_button.clicked.connect(self._add_file)
        self.settings_button = QPushButton("Open Settings")
        self.settings_button.clicked.connect(self._open_settings)
        self.settings_button.hide()
        self.others_button = QPushButton("See all models")
        self.others_button.clicked.connect(self._see_all)
        for button in (self.download_button, self.add_file_button, self.settings_button, self.others_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        for widget in (self.name, self.facts, self.progress, self.state, self.failure):
            card.addWidget(widget)
        card.addLayout(buttons)
        layout.addWidget(self.card)

        self.offline_note = QLabel()
        self.offline_note.setTextFormat(Qt.RichText)
        self.offline_note.setWordWrap(True)
        self.offline_note.hide()
        layout.addWidget(self.offline_note)
        self.demo_note = QLabel(DEMO_NOTE)
        self.demo_note.setTextFormat(Qt.RichText)
        self.demo_note.setWordWrap(True)
        self.demo_note.setObjectName("Muted")
        layout.addWidget(self.demo_note)
        line = QFrame()
        line.setFrameShape(QFrame.HLine)
        line.setStyleSheet("color: palette(mid);")
        layout.addWidget(line)
        privacy_title = QLabel("Your privacy")
        privacy_title.setStyleSheet("font-size: 15px; font-weight: 600;")
        layout.addWidget(privacy_title)
        self.privacy = QLabel(privacy_html())
        self.privacy.setTextFormat(Qt.RichText)
        self.privacy.setWordWrap(True)
        layout.addWidget(self.privacy)
        layout.addStretch(1)

        footer = QHBoxLayout()
        footer.setContentsMargins(24, 0, 24, 0)
        footer.addStretch(1)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        footer.addWidget(self.close_button)
        outer.addLayout(footer)

        page.advice_ready.connect(self._advice_ready)
        if page.downloads_tab is not None:
            page.downloads_tab.jobs_changed.connect(self._follow_job)
        page.model_installed.connect(self._installed)
        if page.advice is not None:
            self._advice_ready(page.advice)  # the connection is checked when the dialog is shown

    # ---- what to show ------------------------------------------------------

    def refresh(self) -> None:
        """Show the recommendation (once the page knows it) and check the connection again."""
        if self.page.advice is not None:
            self._advice_ready(self.page.advice)
        self._check_connection()

    def _offline(self) -> bool:
        return offline_mode_on(self.page.library.settings)

    def _check_connection(self) -> None:
        """One quick reachability check off the GUI thread (offline mode: none at all)."""
        if self._offline():
            self.reachable = False
            self._show_offline()
            return
        from engines.network import hub_endpoint
        from engines.library.reachability import check_reachable

        endpoint = hub_endpoint()
        if self._check is not None:
            self._check.cancel()
        self._check = run_in_background(lambda: check_reachable(endpoint), self._reached, self._unreached)

    def _reached(self, _result) -> None:
        self.reachable = True
        self.offline_note.hide()
        self.settings_button.hide()
        self._update_download_button()

    def _unreached(self, error) -> None:
        self.reachable = False
        self.unreachable_reason = error.message if isinstance(error, EngineError) else str(error)
        self._show_offline()

    def _show_offline(self) -> None:
        if self._offline():
            head = "<b>Offline mode is on</b>, so Atelier downloads nothing. To chat with a capable model:"
            self.settings_button.show()
        else:
            head = (f"<b>This computer seems to be offline.</b> {html.escape(self.unreachable_reason)} "
                    "Instead, to chat with a capable model:")
            self.settings_button.hide()
        self.offline_note.setText(head + OFFLINE_STEPS)
        self.offline_note.show()
        self._update_download_button()

    def _advice_ready(self, advice) -> None:
        pick = advice.recommended.get("chat")
        catalog = self.page.library.catalog
        self.entry = catalog.get(pick.entry_id) if pick is not None else None
        if self.entry is None:
            self.name.setText("No chat model in the catalog fits this machine comfortably.")
            self.facts.setText("Free some memory and press Refresh on the Models page, or add a small GGUF file "
                               "you have.")
            self._update_download_button()
            return
        entry, verdict = self.entry, advice.verdicts.get(self.entry.id)
        self.name.setText(f"★ {entry.name}")
        rows = [
            html.escape(entry.description),
            f"<b>Size:</b> {format_bytes(entry.total_size)} ({fmt_parameters(entry.parameters)}, {html.escape(entry.quantization)})",
            f"<b>Download:</b> {html.escape(advice.download_time(entry.total_size).words)}",
        ]
        if verdict is not None:
            rows.append(f"<b>Fits:</b> {dot_html(verdict.verdict)} {html.escape(verdict.label)}: "
                        f"{html.escape(verdict.explanation)}")
            if verdict.speed is not None:
                rows.append(f"<b>Speed:</b> {html.escape(verdict.speed.words)}")
        rows.append(f"<b>Why this one:</b> {html.escape(pick.reason)}")
        rows.append(f"<b>License:</b> {html.escape(entry.license)}")
        self.facts.setText("<br>".join(rows))
        self._follow_job()

    # ---- the download --------------------------------------------------------

    def _installed_already(self) -> bool:
        return self.entry is not None and self.page.library.models.get(self.entry.id) is not None

    def _job(self):
        if self.entry is None:
            return None
        return self.page.catalog_tab.active_jobs().get(self.entry.id)

    def _update_download_button(self) -> None:
        job = self._job()
        busy = job is not None and job.state in ("queued", "running")
        installed = self._installed_already()
        online = self.reachable is not False and not self._offline()
        self.download_button.setVisible(not installed)
        self.download_button.setEnabled(self.entry is not None and online and not busy)
        if self.entry is not None and not busy:
            verb = "Retry download" if job is not None and job.state == "failed" else (
                "Resume download" if job is not None and job.state == "paused" else "Download")
            self.download_button.setText(f"{verb} ({format_bytes(self.entry.total_size)})")
        if not online:
            self.download_button.setToolTip("Offline: nothing can be downloaded now.")
        else:
            self.download_button.setToolTip("")

    def download(self) -> None:
        """Start (or resume, or retry) the recommended model's download: the Catalog tab's own path."""
        if self.entry is None:
            return
        self.failure.hide()
        tab = self.page.catalog_tab
        tab.download(self.entry)
        if tab.banner.isVisible():  # refused up front (disk space, offline): say it here too
            self._show_failure(tab.banner.text())
        self._follow_job()

    def _follow_job(self) -> None:
        job = self._job()
        installed = self._installed_already()
        if installed:
            self.progress.hide()
            self.failure.hide()
            self.state.setText(f"✓ {self.entry.name} is installed. Choose it in the Chat page's model list.")
            self.state.show()
        elif job is None:
            self.progress.hide()
            self.state.hide()
        elif job.state == "failed":
            self.progress.hide()
            self.state.hide()
            self._show_failure(f"The download failed: {job.error or 'no reason was given'}")
        else:
            self.failure.hide()
            self.progress.show()
            if job.bytes_total:
                self.progress.setRange(0, 1000)
                self.progress.setValue(int(1000 * min(job.bytes_done, job.bytes_total) / job.bytes_total))
                amount = f"{100 * job.bytes_done // job.bytes_total}% of {format_bytes(job.bytes_total)}"
            else:
                self.progress.setRange(0, 0)
                amount = "starting"
            words = {"queued": "Waiting to download", "running": "Downloading", "paused": "Paused"}
            self.state.setText(f"{words.get(job.state, job.state)}: {amount}. You can close this window; "
                               "the download continues on the Models page.")
            self.state.show()
        self._update_download_button()

    def _show_failure(self, message: str) -> None:
        self.failure.setText(message)
        self.failure.show()

    def _installed(self, model_id: str) -> None:
        if self.entry is not None and model_id == self.entry.id:
            QTimer.singleShot(0, self._follow_job)

    # ---- the other ways --------------------------------------------------------

    def _add_file(self) -> None:
        self._see_tab(self.page.installed_tab)
        self.page.installed_tab.choose_file()

    def _open_settings(self) -> None:
        window = self.page.window()
        if hasattr(window, "show_page"):
            window.show_page("Settings")
        self.close()

    def _see_all(self) -> None:
        self._see_tab(self.page.catalog_tab)
        self.close()

    def _see_tab(self, tab) -> None:
        window = self.page.window()
        if hasattr(window, "show_page"):
            window.show_page("Models")
        self.page.tabs.setCurrentWidget(tab)

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if self.reachable is not True:  # first showing, or offline last time: look again
            self.refresh()

    def shutdown(self) -> None:
        if self._check is not None:
            self._check.cancel()
        self.close()

