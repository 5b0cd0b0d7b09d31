"""The Catalog tab's right-hand pane: what the selected model is, whether it fits, how fast, and Download.

A download started here reports back here: while it runs the button shows
its progress, and when it fails the error stays in this pane with a Retry
button, instead of the row quietly offering "Download" again while the
error sits on the Downloads tab.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFormLayout, QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from desktop.pages.models.table_models import KINDS
from desktop.pages.models.verdict_view import VerdictView, fmt_parameters
from desktop.widgets.labels import banner_label
from desktop.widgets.scroll_area import scroll_area, transparent_body
from engines.byte_sizes import format_bytes
from engines.library.advisor import CatalogAdvice
from engines.library.catalog import CatalogEntry
from engines.library.download.queue import DownloadJob
from engines.machine.fit import FitVerdict


def job_words(job: DownloadJob | None) -> str | None:
    """A download's state in a few words for the catalog row: "downloading 45%", "download failed"."""
    if job is None:
        return None
    if job.state == "failed":
        return "download failed"
    if job.state == "paused":
        return "download paused"
    if job.state in ("queued", "running"):
        share = f" {100 * job.bytes_done // job.bytes_total}%" if job.bytes_total else ""
        return f"downloading{share}"
    return None


class EntryDetails(QFrame):
    """Emits ``download_clicked(entry)`` for Download, Resume and Retry alike: the tab knows which it is."""

    download_clicked = Signal(object)  # CatalogEntry

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("Panel")
        self.entry: CatalogEntry | None = None
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        body = transparent_body("DetailsBody")
        outer.addWidget(scroll_area(body))
        layout = QVBoxLayout(body)
        layout.setContentsMargins(16, 14, 16, 14)
        layout.setSpacing(8)

        self.placeholder = QLabel("Select a model to see what it is, whether it fits this machine and how fast it runs.")
        self.placeholder.setObjectName("Muted")
        self.placeholder.setWordWrap(True)
        layout.addWidget(self.placeholder)

        self.content = QWidget()
        content = QVBoxLayout(self.content)
        content.setContentsMargins(0, 0, 0, 0)
        content.setSpacing(8)
        self.recommended = QLabel()  # "★ Recommended for this machine" and why
        self.recommended.setWordWrap(True)
        self.recommended.setTextFormat(Qt.RichText)
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.title.setStyleSheet("font-size: 16px; font-weight: 600;")
        self.subtitle = QLabel()
        self.subtitle.setObjectName("Muted")
        self.subtitle.setWordWrap(True)
        self.description = QLabel()
        self.description.setWordWrap(True)
        self.description.setTextInteractionFlags(Qt.TextSelectableByMouse)
        for widget in (self.recommended, self.title, self.subtitle, self.description):
            content.addWidget(widget)

        facts = QFormLayout()
        facts.setContentsMargins(0, 4, 0, 4)
        facts.setHorizontalSpacing(12)
        facts.setVerticalSpacing(4)
        facts.setRowWrapPolicy(QFormLayout.WrapLongRows)
        self.repo = QLabel()
        self.repo.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.repo.setWordWrap(True)
        self.parameters = QLabel()
        self.context = QLabel()
        self.files = QLabel()
        self.files.setWordWrap(True)
        self.download_time = QLabel()
        self.download_time.setWordWrap(True)
        self.license = QLabel()
        self.license.setWordWrap(True)
        for label, widget in (("Repository", self.repo), ("Size", self.parameters), ("Context", self.context),
                              ("Files", self.files), ("Download", self.download_time), ("License", self.license)):
            name = QLabel(label)
            name.setObjectName("Muted")
            facts.addRow(name, widget)
        content.addLayout(facts)

        line = QFrame()
        line.setFrameShape(QFrame.HLine)
        line.setStyleSheet("color: palette(mid);")
        content.addWidget(line)
        self.verdict = VerdictView()
        content.addWidget(self.verdict)

        layout.addWidget(self.content)
        layout.addStretch(1)

        # Pinned under the scrolling facts: the action stays in view in a small window.
        self.footer = QWidget()
        self.footer.setObjectName("DetailsFooter")
        self.footer.setStyleSheet("QWidget#DetailsFooter { background: transparent; border-top: 1px solid palette(mid); }")
        foot = QVBoxLayout(self.footer)
        foot.setContentsMargins(16, 8, 16, 10)
        foot.setSpacing(6)
        self.failure = banner_label()  # a failed download, where it was started
        foot.addWidget(self.failure)
        buttons = QHBoxLayout()
        self.download_button = QPushButton("Download")
        self.download_button.setObjectName("Primary")
        self.download_button.clicked.connect(lambda: self.entry and self.download_clicked.emit(self.entry))
        buttons.addWidget(self.download_button)
        self.installed_label = QLabel("✓  Installed")
        self.installed_label.setStyleSheet("font-weight: 600;")
        buttons.addWidget(self.installed_label)
        buttons.addStretch(1)
        foot.addLayout(buttons)
        outer.addWidget(self.footer)
        self.show_entry(None, None, False, None)

    def show_entry(self, entry: CatalogEntry | None, verdict: FitVerdict | None, installed: bool,
                   job: DownloadJob | None, advice: CatalogAdvice | None = None) -> None:
        self.entry = entry
        self.placeholder.setVisible(entry is None)
        self.content.setVisible(entry is not None)
        self.footer.setVisible(entry is not None)
        if entry is None:
            return
        advice = advice or CatalogAdvice()
        pick = next((p for p in advice.recommended.values() if p.entry_id == entry.id), None)
        self.recommended.setText(f"<b>★ Recommended for this machine.</b> {html.escape(pick.reason)}" if pick else "")
        self.recommended.setVisible(pick is not None)
        self.title.setText(entry.name)
        self.subtitle.setText(" · ".join((KINDS[entry.kind], entry.family, entry.quantization, format_bytes(entry.total_size))))
        self.description.setText(entry.description)
        self.repo.setText(entry.repo)
        self.parameters.setText(fmt_parameters(entry.parameters))
        noun = "prompt tokens" if entry.kind == "image" else "tokens"
        self.context.setText(f"{entry.context_length:,} {noun}")
        count = len(entry.files)
        files = f"{count} file" if count == 1 else f"{count} files"
        projector = entry.projector_file
        if projector is not None:  # the companion file comes with the model (LM Studio #870: it often does not)
            files += (f": the model and its vision projector ({format_bytes(projector.size)}), "
                      "so it can read images you drop into the chat")
        self.files.setText(files)
        self.download_time.setText(f"{format_bytes(entry.total_size)}, {advice.download_time(entry.total_size).words}")
        gated = ("<br><span style='color:palette(placeholder-text)'>Gated: accept its terms on Hugging Face "
                 "and add your token in Settings.</span>") if entry.gated else ""
        self.license.setText(html.escape(entry.license) + gated)
        self.verdict.set_verdict(verdict, measured=advice.comparisons.get(entry.id))
        self.update_state(installed, job)

    def update_state(self, installed: bool, job: DownloadJob | None) -> None:
        """The button and the failure line for the entry's download (None: no download in progress)."""
        self.installed_label.setVisible(installed)
        self.download_button.setVisible(not installed)
        failed = job is not None and job.state == "failed" and not installed
        self.failure.setText(f"The download failed: {job.error or 'no reason was given'}" if failed else "")
        self.failure.setVisible(failed)
        if failed:
            self.download_button.setText("Retry download")
            self.download_button.setEnabled(True)
        elif job is not None and job.state == "paused":
            self.download_button.setText("Resume download")
            self.download_button.setEnabled(True)  # a click resumes it
        elif job is not None and job.state in ("queued", "running"):
            share = f" {100 * job.bytes_done // job.bytes_total}%" if job.bytes_total else ""
            self.download_button.setText(f"Downloading…{share}")
            self.download_button.setEnabled(False)
        else:
            self.download_button.setText("Download")
            self.download_button.setEnabled(True)
