"""The Catalog tab: curated models with a fit verdict and an expected speed each, details, download; Hub search.

The verdicts, speeds and recommendations are computed by the page (off the
GUI thread, :class:`engines.library.advisor.Advisor`) and handed in with
:meth:`CatalogTab.set_advice`; until then the table says "Checking…". Once
they arrive the table is sorted for this machine: the recommended models
first, then those that run comfortably, then the rest.
"""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QLineEdit, QSplitter, QVBoxLayout, QWidget

from desktop.pages.models.entry_details import EntryDetails, job_words
from desktop.pages.models.hub_search import HubSearchPanel
from desktop.pages.models.table_models import ITEM_ROLE, CatalogFilter, CatalogTableModel
from desktop.pages.models.verdict_view import confirm_download_anyway
from desktop.widgets.labels import banner_label
from desktop.widgets.list_table import list_table_view
from engines.errors import EngineError, ErrorKind
from engines.library.advisor import CatalogAdvice
from engines.library.catalog import CatalogEntry
from engines.library.download.queue import DownloadJob
from engines.machine.fit import FitVerdict
from engines.library.service import ModelLibrary

WONT_FIT = ErrorKind.WONT_FIT


class CatalogTab(QWidget):
    """Emits ``job_added`` after each successful pull (catalog or Hub)."""

    job_added = Signal(object)  # DownloadJob

    def __init__(self, library: ModelLibrary, parent=None) -> None:
        super().__init__(parent)
        self.library = library
        self.verdicts: dict[str, FitVerdict] = {}
        self.advice = CatalogAdvice()
        self._sorted_for_machine = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 12, 0, 0)
        layout.setSpacing(8)

        toolbar = QHBoxLayout()
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter the catalog…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setMaximumWidth(280)
        self.kind_filter = QComboBox()
        for label, kind in (("All", ""), ("Chat", "chat"), ("Image", "image"), ("Embedding", "embedding")):
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
        self.table = list_table_view(self.proxy, CatalogTableModel.LICENSE)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.AscendingOrder)  # catalog order until the user sorts
        header = self.table.horizontalHeader()
        header.setMinimumSectionSize(60)

        self.details = EntryDetails()
        self.details.setMinimumWidth(270)
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

    def set_advice(self, advice: CatalogAdvice) -> None:
        """Verdicts with speeds, the recommendations and the order for this machine (from the page)."""
        self.advice = advice
        self.verdicts = dict(advice.verdicts)
        self.model.set_advice(advice)
        if not self._sorted_for_machine:  # the first time: best for this machine first (the user may re-sort)
            self._sorted_for_machine = True
            self.table.sortByColumn(CatalogTableModel.VERDICT, Qt.AscendingOrder)
        self._fit_columns()
        self._show_selected()

    def _fit_columns(self) -> None:
        """Size the columns to their contents once per data change (not on every repaint).

        The name gets room for the longest one (within reason): at 1024 pixels the
        columns that matter least (kind, quantization, licence) scroll, never the name.
        """
        for column in range(self.model.columnCount() - 1):
            self.table.resizeColumnToContents(column)
        name = CatalogTableModel.NAME
        self.table.setColumnWidth(name, max(170, min(self.table.columnWidth(name) + 8, 250)))

    def set_resources(self, resources) -> None:
        self.hub.resources = resources

    def refresh_states(self) -> None:
        """Installed marks and the selected entry's button, after installs, removals and job changes."""
        self.model.set_installed({m.id for m in self.library.models.all()})
        self.refresh_job_state()

    def refresh_job_state(self) -> None:
        """Each row's download state and the selected entry's button, after a job changed (in memory: cheap at 5/s)."""
        jobs = self.active_jobs()
        words = {model_id: job_words(job) for model_id, job in jobs.items()}
        self.model.set_jobs({model_id: text for model_id, text in words.items() if text})
        entry = self.details.entry
        if entry is not None:
            self.details.update_state(entry.id in self.model.installed, jobs.get(entry.id))
        self.hub.refresh_jobs(jobs)

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

    def active_jobs(self) -> dict[str, DownloadJob]:
        """The latest download of each model that is under way, paused or failed (completed and cancelled ones are done)."""
        try:
            jobs = self.library.queue().jobs()
        except (EngineError, OSError):  # the queue could not start: the page says so already
            return {}
        latest: dict[str, DownloadJob] = {}
        for job in sorted(jobs, key=lambda j: j.created_at):
            if job.state in ("queued", "running", "paused", "failed"):
                latest[job.model_id] = job
            elif job.model_id in latest:
                del latest[job.model_id]  # a later try replaced it
        return latest

    def _job_for(self, model_id: str) -> DownloadJob | None:
        return self.active_jobs().get(model_id)

    def _show_selected(self) -> None:
        index = self.table.selectionModel().currentIndex()
        entry = index.data(ITEM_ROLE) if index.isValid() else None
        if entry is None:
            self.details.show_entry(None, None, False, None)
            return
        self.details.show_entry(entry, self.verdicts.get(entry.id), entry.id in self.model.installed,
                                self._job_for(entry.id), self.advice)

    # ---- download --------------------------------------------------------

    def download(self, entry: CatalogEntry) -> None:
        self.show_error("")
        job = self._job_for(entry.id)
        if job is not None and job.state == "paused":
            self._pull(entry.id, entry.name)  # pull() resumes a paused job
            return
        if job is not None and job.state == "failed":
            self.retry(job)
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

    def retry(self, job: DownloadJob) -> None:
        """Queue a failed download again; it resumes from what it already has."""
        try:
            job = self.library.queue().retry(job.id)
        except EngineError as exc:
            self.show_error(exc.message)
            return
        self.status.setText(f"{job.name}: trying the download again.")
        self.refresh_job_state()
        self.job_added.emit(job)

    def _added(self, job: DownloadJob) -> None:
        self.status.setText(f"{job.name}: added to Downloads.")
        self.refresh_states()
        self.job_added.emit(job)

    def shutdown(self) -> None:
        self.hub.shutdown()
