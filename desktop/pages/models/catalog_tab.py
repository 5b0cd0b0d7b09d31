"""The Catalog tab: curated models with a fit verdict each, details, download; Hub search.

The verdicts are computed by the page (off the GUI thread) and handed in
with :meth:`CatalogTab.set_verdicts`; until then the table says "Checking…".
"""

from __future__ import annotations

import html

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from desktop.pages.models.hub_search import HubSearchPanel
from desktop.pages.models.table_models import ITEM_ROLE, KINDS, CatalogFilter, CatalogTableModel, list_table_view
from desktop.pages.models.verdict_view import VerdictView, confirm_download_anyway, fmt_parameters, fmt_size
from desktop.widgets.labels import banner_label
from engines.errors import EngineError, ErrorKind
from engines.library.catalog import CatalogEntry
from engines.library.download.queue import DownloadJob
from engines.library.fit import FitVerdict
from engines.library.service import ModelLibrary

WONT_FIT = ErrorKind.WONT_FIT


class EntryDetails(QFrame):
    """The right-hand pane: what the selected model is, whether it fits, and Download."""

    download_clicked = Signal(object)  # CatalogEntry

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("Panel")
        self.entry: CatalogEntry | None = None
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setObjectName("PanelScroll")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        outer.addWidget(scroll)
        body = QWidget()
        body.setObjectName("DetailsBody")
        body.setStyleSheet("QWidget#DetailsBody { background: transparent; }")
        scroll.setWidget(body)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(16, 14, 16, 14)
        layout.setSpacing(8)

        self.placeholder = QLabel("Select a model to see what it is and whether it fits this machine.")
        self.placeholder.setObjectName("Muted")
        self.placeholder.setWordWrap(True)
        layout.addWidget(self.placeholder)

        self.content = QWidget()
        content = QVBoxLayout(self.content)
        content.setContentsMargins(0, 0, 0, 0)
        content.setSpacing(8)
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.title.setStyleSheet("font-size: 16px; font-weight: 600;")
        self.subtitle = QLabel()
        self.subtitle.setObjectName("Muted")
        self.subtitle.setWordWrap(True)
        self.description = QLabel()
        self.description.setWordWrap(True)
        self.description.setTextInteractionFlags(Qt.TextSelectableByMouse)
        content.addWidget(self.title)
        content.addWidget(self.subtitle)
        content.addWidget(self.description)

        facts = QFormLayout()
        facts.setContentsMargins(0, 4, 0, 4)
        facts.setHorizontalSpacing(12)
        facts.setVerticalSpacing(4)
        self.repo = QLabel()
        self.repo.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.repo.setWordWrap(True)
        self.parameters = QLabel()
        self.context = QLabel()
        self.files = QLabel()
        self.license = QLabel()
        self.license.setWordWrap(True)
        for label, widget in (("Repository", self.repo), ("Size", self.parameters), ("Context", self.context),
                              ("Files", self.files), ("License", self.license)):
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

        buttons = QHBoxLayout()
        self.download_button = QPushButton("Download")
        self.download_button.setObjectName("Primary")
        self.download_button.clicked.connect(lambda: self.entry and self.download_clicked.emit(self.entry))
        buttons.addWidget(self.download_button)
        self.installed_label = QLabel("✓  Installed")
        self.installed_label.setStyleSheet("font-weight: 600;")
        buttons.addWidget(self.installed_label)
        buttons.addStretch(1)
        content.addLayout(buttons)
        layout.addWidget(self.content)
        layout.addStretch(1)
        self.show_entry(None, None, False, None)

    def show_entry(self, entry: CatalogEntry | None, verdict: FitVerdict | None, installed: bool, job: DownloadJob | None) -> None:
        self.entry = entry
        self.placeholder.setVisible(entry is None)
        self.content.setVisible(entry is not None)
        if entry is None:
            return
        self.title.setText(entry.name)
        self.subtitle.setText(" · ".join((KINDS[entry.kind], entry.family, entry.quantization, fmt_size(entry.total_size))))
        self.description.setText(entry.description)
        self.repo.setText(entry.repo)
        self.parameters.setText(fmt_parameters(entry.parameters))
        noun = "prompt tokens" if entry.kind == "image" else "tokens"
        self.context.setText(f"{entry.context_length:,} {noun}")
        count = len(entry.files)
        self.files.setText(f"{count} file" if count == 1 else f"{count} files")
        gated = ("<br><span style='color:palette(placeholder-text)'>Gated: accept its terms on Hugging Face "
                 "and add your token in Settings.</span>") if entry.gated else ""
        self.license.setText(html.escape(entry.license) + gated)
        self.verdict.set_verdict(verdict)
        self.update_state(installed, job)

    def update_state(self, installed: bool, job: DownloadJob | None) -> None:
        self.installed_label.setVisible(installed)
        self.download_button.setVisible(not installed)
        if job is not None and not job.finished:
            share = f" {100 * job.bytes_done // job.bytes_total}%" if job.bytes_total else ""
            text = "Paused" if job.state == "paused" else f"Downloading…{share}"
            self.download_button.setText(text)
            self.download_button.setEnabled(job.state == "paused")  # a click resumes it
            if job.state == "paused":
                self.download_button.setText("Resume download")
        else:
            self.download_button.setText("Download")
            self.download_button.setEnabled(True)


class CatalogTab(QWidget):
    """Emits ``job_added`` after each successful pull (catalog or Hub)."""

    job_added = Signal(object)  # DownloadJob

    def __init__(self, library: ModelLibrary, parent=None) -> None:
        super().__init__(parent)
        self.library = library
        self.verdicts: dict[str, FitVerdict] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 12, 0, 0)
        layout.setSpacing(8)

        toolbar = QHBoxLayout()
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter the catalog…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setMaximumWidth(280)
        self.kind_filter = QComboBox()
        for label, kind in (("All", ""), ("Chat", "chat"), ("Image", "image")):
            self.kind_filter.addItem(label, kind)
        toolbar.addWidget(self.filter_edit, 1)
        toolbar.addWidget(self.kind_filter)
        toolbar.addStretch(1)
        self.hub = HubSearchPanel(library, self)
        self.hub.job_added.connect(self.job_added)
        toolbar.addWidget(self.hub.query, 1)
        toolbar.addWidget(self.hub.search_button)
        layout.addLayout(toolbar)

        self.banner = banner_label()
        layout.addWidget(self.banner)
        layout.addWidget(self.hub.message)
        layout.addWidget(self.hub.info)

        self.model = CatalogTableModel(self)
        self.proxy = CatalogFilter(self)
        self.proxy.setSourceModel(self.model)
        self.table = list_table_view(self.proxy, CatalogTableModel.NAME)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.AscendingOrder)  # catalog order until the user sorts
        header = self.table.horizontalHeader()
        header.setMinimumSectionSize(60)

        self.details = EntryDetails()
        self.details.setMinimumWidth(280)
        self.details.download_clicked.connect(self.download)

        top = QSplitter(Qt.Horizontal)
        top.setChildrenCollapsible(False)
        top.addWidget(self.table)
        top.addWidget(self.details)
        top.setStretchFactor(0, 1)
        top.setSizes([760, 320])
        self.splitter = QSplitter(Qt.Vertical)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(top)
        self.splitter.addWidget(self.hub.results)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        layout.addWidget(self.splitter, 1)
        self.status = QLabel()
        self.status.setObjectName("StatusLine")
        layout.addWidget(self.status)

        self.filter_edit.textChanged.connect(self.proxy.set_text)
        self.kind_filter.currentIndexChanged.connect(lambda _i: self.proxy.set_kind(self.kind_filter.currentData()))
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._show_selected())
        self.reload()

    # ---- data ------------------------------------------------------------

    def reload(self) -> None:
        """(Re)read the catalog; a broken catalog shows its error and an empty table."""
        catalog = self.library.catalog
        if catalog.error:
            self.show_error(catalog.error)
        self.model.set_entries(catalog.entries)
        self.refresh_states()
        self._fit_columns()
        self._show_selected()

    def set_verdicts(self, verdicts: dict[str, FitVerdict]) -> None:
        self.verdicts = dict(verdicts)
        self.model.set_verdicts(self.verdicts)
        self._fit_columns()
        self._show_selected()

    def _fit_columns(self) -> None:
        """Size the columns to their contents once per data change (not on every repaint)."""
        for column in range(1, self.model.columnCount()):
            self.table.resizeColumnToContents(column)

    def set_resources(self, resources) -> None:
        self.hub.resources = resources

    def refresh_states(self) -> None:
        """Installed marks and the selected entry's button, after installs, removals and job changes."""
        self.model.set_installed({m.id for m in self.library.models.all()})
        self.refresh_job_state()

    def refresh_job_state(self) -> None:
        """The selected entry's button after a download changed (in memory: cheap at 5/s)."""
        entry = self.details.entry
        if entry is not None:
            self.details.update_state(entry.id in self.model.installed, self._job_for(entry.id))

    def select(self, entry_id: str) -> bool:
        for row in range(self.proxy.rowCount()):
            index = self.proxy.index(row, 0)
            if index.data(ITEM_ROLE).id == entry_id:
                self.table.selectionModel().setCurrentIndex(
                    index, QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)
                self.table.scrollTo(index)
                return True
        return False

    def show_error(self, message: str) -> None:
        self.banner.setText(message)
        self.banner.setVisible(bool(message))

    def _job_for(self, model_id: str) -> DownloadJob | None:
        jobs = [j for j in self.library.queue().jobs() if j.model_id == model_id and not j.finished]
        return jobs[-1] if jobs else None

    def _show_selected(self) -> None:
        index = self.table.selectionModel().currentIndex()
        entry = index.data(ITEM_ROLE) if index.isValid() else None
        if entry is None:
            self.details.show_entry(None, None, False, None)
            return
        self.details.show_entry(entry, self.verdicts.get(entry.id), entry.id in self.model.installed, self._job_for(entry.id))

    # ---- download --------------------------------------------------------

    def download(self, entry: CatalogEntry) -> None:
        self.show_error("")
        job = self._job_for(entry.id)
        if job is not None and job.state == "paused":
            self._pull(entry.id, entry.name)  # pull() resumes a paused job
            return
        try:
            self._added(self.library.pull(entry.id))
        except EngineError as exc:
            if exc.kind != WONT_FIT:
                self.show_error(exc.message)
                return
            if confirm_download_anyway(self, entry.name, exc.message):
                self._pull(entry.id, entry.name, anyway=True)

    def _pull(self, source: str, name: str, anyway: bool = False) -> None:
        try:
            self._added(self.library.pull(source, anyway=anyway))
        except EngineError as exc:
            self.show_error(exc.message)

    def _added(self, job: DownloadJob) -> None:
        self.status.setText(f"{job.name}: added to Downloads.")
        self.refresh_states()
        self.job_added.emit(job)

    def shutdown(self) -> None:
        self.hub.shutdown()
