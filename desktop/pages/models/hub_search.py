"""Search the Hugging Face Hub for GGUF models, see if each file fits, download one.

Every Hub call runs on a pool thread. A file's verdict comes from a real
GGUF header read over HTTP (a few MB with Range requests, never the
model): the header of the smallest model file in the repository gives the
architecture, and each quantization is judged with its own size, so one
repository costs one header read instead of one per file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import PurePosixPath
from urllib.parse import quote

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.pages.models.verdict_view import confirm_download_anyway, dot_icon
from desktop.widgets.labels import banner_label
from desktop.workers.background import BackgroundTask, run_in_background
from engines.byte_sizes import format_bytes
from engines.errors import EngineError
from engines import network
from engines.library import hub_search, remote_gguf
from engines.machine.fit import FitVerdict, ModelShape, judge_text_fit
from engines.network import OfflineError
from engines.library.service import DEFAULT_CONTEXT, ModelLibrary

OFFLINE_MESSAGE = "Offline mode is on. Turn it off in Settings to search Hugging Face."


def hub_file_url(repo: str, path: str) -> str:
    return f"{network.hub_endpoint()}/{repo}/resolve/main/{quote(path, safe='/')}"


def describe_hub_error(error) -> str:
    """What to show for a failed Hub call: offline mode, or the library's own sentence (already complete)."""
    if isinstance(error, OfflineError):
        return OFFLINE_MESSAGE
    if isinstance(error, EngineError):
        return error.message
    return f"Could not reach Hugging Face: {error}"


def hub_model_id(repo: str, path: str) -> str:
    """The id a download of *path* from *repo* gets (ModelLibrary.plan_download)."""
    return f"{repo}/{PurePosixPath(path).name}"


def judge_hub_files(repo: str, files: list, resources, advisor=None) -> dict[str, FitVerdict | str]:
    """Verdicts for a repository's GGUF files, from one remote header (runs on a pool thread)."""
    models = [f for f in files if not f.is_projector and f.complete]
    if not models:
        return {}
    first = models[0]  # smallest: the cheapest header to read, same architecture as the rest
    try:
        header = remote_gguf.read_remote_gguf_header(hub_file_url(repo, first.path))
    except EngineError as exc:
        reason = describe_hub_error(exc)
        return {f.path: reason for f in models}
    shape = ModelShape.from_header(header)
    context = min(DEFAULT_CONTEXT, header.context_length or DEFAULT_CONTEXT)
    first_part = first.parts[0].size if first.is_split else first.size
    metadata = max(0, first_part - int(header.tensor_data_bytes))  # header bytes, roughly the same in every file
    verdicts: dict[str, FitVerdict | str] = {}
    for f in models:
        exact = f is first and not f.is_split
        file_shape = shape if exact else replace(shape, weights_bytes=max(0, f.size - metadata), layer_bytes=())
        verdict = judge_text_fit(file_shape, context, resources)
        verdicts[f.path] = advisor.with_speed(verdict, advisor.text_speed(verdict)) if advisor is not None else verdict
    return verdicts


class HubSearchPanel(QObject):
    """Owns the search box, the message line and the results; the Catalog tab lays them out."""

    job_added = Signal(object)  # DownloadJob

    COLUMNS = ("File", "Quantization", "Size", "Fits this machine", "")
    FILE, QUANT, SIZE, VERDICT, ACTION = range(5)

    def __init__(self, library: ModelLibrary, parent=None) -> None:
        super().__init__(parent)
        self.library = library
        self.resources = None  # set by the page once the hardware is known
        self.advisor = None  # set by the page: adds expected speeds to the verdicts
        self.jobs: dict[str, object] = {}  # model id -> its latest unfinished or failed DownloadJob
        self._reported_failures: set[str] = set()  # job ids whose failure was shown already
        self.repo: str | None = None
        self.files: list = []
        self.verdicts: dict[str, FitVerdict | str] = {}
        self._tasks: dict[str, BackgroundTask] = {}
        self.buttons: dict[str, QPushButton] = {}  # file path -> its Download button

        self.query = QLineEdit()
        self.query.setPlaceholderText("Search Hugging Face…")
        self.query.setClearButtonEnabled(True)
        self.query.setMaximumWidth(300)
        self.query.returnPressed.connect(self.search)
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self.search)
        self.message = banner_label()  # failures, as a Banner
        self.info = QLabel()  # progress and results, muted
        self.info.setObjectName("Muted")
        self.info.setWordWrap(True)
        self.info.hide()

        self.results = QWidget()
        layout = QVBoxLayout(self.results)
        layout.setContentsMargins(0, 6, 0, 0)
        head = QHBoxLayout()
        self.results_title = QLabel("Hugging Face results")
        self.results_title.setStyleSheet("font-weight: 600;")
        head.addWidget(self.results_title)
        head.addStretch(1)
        self.close_button = QPushButton("Close results")
        self.close_button.clicked.connect(self.close_results)
        head.addWidget(self.close_button)
        layout.addLayout(head)
        split = QSplitter(Qt.Horizontal)
        split.setChildrenCollapsible(False)
        self.repo_list = QListWidget()
        self.repo_list.setStyleSheet("QListWidget::item { padding: 5px 8px; }")
        self.repo_list.currentItemChanged.connect(lambda item, _old: item and self.open_repo(item.data(Qt.UserRole)))
        split.addWidget(self.repo_list)
        self.file_table = QTableWidget(0, len(self.COLUMNS))
        self.file_table.setHorizontalHeaderLabels(self.COLUMNS)
        self.file_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.file_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.file_table.setShowGrid(False)
        self.file_table.verticalHeader().hide()
        self.file_table.verticalHeader().setDefaultSectionSize(34)
        header = self.file_table.horizontalHeader()
        header.setDefaultAlignment(Qt.AlignLeft | Qt.AlignVCenter)
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(self.FILE, QHeaderView.Stretch)
        split.addWidget(self.file_table)
        split.setSizes([300, 700])
        layout.addWidget(split, 1)
        self.results.hide()

    # ---- messages --------------------------------------------------------

    def show_message(self, text: str, error: bool = False) -> None:
        """One line under the search box: a Banner for failures, muted text otherwise ("" hides it)."""
        shown, hidden = (self.message, self.info) if error else (self.info, self.message)
        shown.setText(text)
        shown.setVisible(bool(text))
        hidden.clear()
        hidden.hide()

    def _run(self, key: str, fn, on_done, on_error=None) -> None:
        old = self._tasks.pop(key, None)
        if old is not None:
            old.cancel()
        self._tasks[key] = run_in_background(fn, on_done, on_error or (lambda e: self.show_message(describe_hub_error(e), True)))

    # ---- search ----------------------------------------------------------

    def search(self) -> None:
        query = self.query.text().strip()
        if not query:
            return
        self.show_message(f"Searching Hugging Face for “{query}”…")
        self.search_button.setEnabled(False)

        def failed(error) -> None:
            self.search_button.setEnabled(True)
            self.show_message(describe_hub_error(error), True)

        self._run("search", lambda: hub_search.search_gguf(query), lambda repos: self._show_repos(query, repos), failed)

    def _show_repos(self, query: str, repos: list) -> None:
        self.search_button.setEnabled(True)
        self.repo_list.clear()
        self.file_table.setRowCount(0)
        self.repo = None
        if not repos:
            self.show_message(f"No GGUF models on Hugging Face match “{query}”.")
            self.results.hide()
            return
        self.show_message("")
        for repo in repos:
            gated = "  · gated" if repo.gated else ""
            item = QListWidgetItem(f"{repo.id}\n{repo.downloads:,} downloads · {repo.likes:,} likes{gated}")
            item.setData(Qt.UserRole, repo.id)
            item.setToolTip(repo.url)
            self.repo_list.addItem(item)
        self.results_title.setText(f"Hugging Face: {len(repos)} repositories for “{query}”")
        self.results.show()

    def close_results(self) -> None:
        self.results.hide()
        self.show_message("")

    # ---- one repository --------------------------------------------------

    def open_repo(self, repo: str) -> None:
        self.repo = repo
        self.files, self.verdicts = [], {}
        self.file_table.setRowCount(0)
        self.show_message(f"Listing the GGUF files of {repo}…")
        self._run("files", lambda: hub_search.list_gguf_files(repo), lambda files: self._show_files(repo, files))

    def _show_files(self, repo: str, files: list) -> None:
        if repo != self.repo:
            return
        self.files = files
        self.show_message("" if files else f"{repo} has no GGUF files.")
        self._fill_files()
        if any(not f.is_projector for f in files):
            known, advisor = self.resources, self.advisor
            self._run("verdicts", lambda: judge_hub_files(repo, files, known or self.library.resources(), advisor),
                      lambda v: self._show_verdicts(repo, v),
                      lambda e: self._show_verdicts(repo, {f.path: describe_hub_error(e) for f in files}))

    def _show_verdicts(self, repo: str, verdicts: dict) -> None:
        if repo == self.repo:
            self.verdicts = verdicts
            self._fill_files()

    def _fill_files(self) -> None:
        self.buttons: dict[str, QPushButton] = {}
        self.file_table.setRowCount(len(self.files))
        for row, f in enumerate(self.files):
            name = f.path + (f"  ({len(f.parts)} parts)" if f.is_split else "")
            self.file_table.setItem(row, self.FILE, QTableWidgetItem(name))
            self.file_table.setItem(row, self.QUANT, QTableWidgetItem(f.quantization or "—"))
            self.file_table.setItem(row, self.SIZE, QTableWidgetItem(format_bytes(f.size)))
            verdict = self.verdicts.get(f.path)
            if f.is_projector:
                item = QTableWidgetItem("Vision projector (used with a model)")
            elif not f.complete:
                item = QTableWidgetItem(f"Incomplete: {len(f.parts)} of {f.expected_parts} parts")
            elif isinstance(verdict, FitVerdict):
                item = QTableWidgetItem(dot_icon(verdict.verdict), verdict.summary)
                speed = f"\nExpected speed: {verdict.speed.basis}." if verdict.speed is not None else ""
                item.setToolTip(verdict.explanation + speed + "".join(f"\n• {s}" for s in verdict.suggestions))
            elif isinstance(verdict, str):
                item = QTableWidgetItem(dot_icon(None), "Cannot check")
                item.setToolTip(verdict)
            else:
                item = QTableWidgetItem(dot_icon(None), "Checking…")
            self.file_table.setItem(row, self.VERDICT, item)
            button = QPushButton("Download")
            button.setEnabled(not f.is_projector and not f.is_split)
            if f.is_split:
                button.setToolTip("Split models (several files) cannot be downloaded from search yet.")
            button.clicked.connect(lambda _=False, hub_file=f: self.download(hub_file))
            self._show_job(button, self.repo, f)
            cell = QWidget()
            cell_layout = QHBoxLayout(cell)
            cell_layout.setContentsMargins(6, 2, 6, 2)
            cell_layout.addWidget(button)
            self.file_table.setCellWidget(row, self.ACTION, cell)
            self.buttons[f.path] = button

    # ---- download --------------------------------------------------------

    def refresh_jobs(self, jobs: dict) -> None:
        """Follow the downloads started here: progress on the button; a failure in the message line, with Retry."""
        self.jobs = jobs
        if self.repo is None:
            return
        for f in self.files:
            button = self.buttons.get(f.path)
            if button is not None:
                self._show_job(button, self.repo, f)
        for f in self.files:
            job = jobs.get(hub_model_id(self.repo, f.path))
            if job is not None and job.state == "failed" and job.id not in self._reported_failures:
                self._reported_failures.add(job.id)
                self.show_message(f"{f.path} could not be downloaded: {job.error or 'no reason was given'} "
                                  "Click Retry to try again.", True)

    def _show_job(self, button: QPushButton, repo: str | None, hub_file) -> None:
        job = self.jobs.get(hub_model_id(repo, hub_file.path)) if repo else None
        if hub_file.is_projector or hub_file.is_split:
            return
        if job is None:
            button.setText("Download")
            button.setEnabled(True)
            button.setToolTip("")
        elif job.state == "failed":
            button.setText("Retry")
            button.setEnabled(True)
            button.setToolTip(f"The download failed: {job.error or 'no reason was given'}")
        elif job.state == "paused":
            button.setText("Resume")
            button.setEnabled(True)
            button.setToolTip("Paused in the Downloads tab")
        else:
            share = f" {100 * job.bytes_done // job.bytes_total}%" if job.bytes_total else "…"
            button.setText(f"Downloading{share}")
            button.setEnabled(False)
            button.setToolTip("")

    def download(self, hub_file) -> None:
        repo = self.repo
        if repo is None:
            return
        job = self.jobs.get(hub_model_id(repo, hub_file.path))
        if job is not None and job.state == "failed":
            self._retry(job)
            return
        verdict = self.verdicts.get(hub_file.path)
        if isinstance(verdict, FitVerdict) and not verdict.fits:
            message = f"{hub_file.path} won't fit on this machine: {verdict.explanation} " + " ".join(verdict.suggestions)
            if not confirm_download_anyway(self.results.window(), hub_file.path, message):
                return
        try:
            job = self.library.pull(repo, file=hub_file.path, sha256=hub_file.sha256)
        except EngineError as exc:
            self.show_message(exc.message, True)
            return
        self.show_message(f"{job.name}: added to Downloads.")
        self.job_added.emit(job)

    def _retry(self, job) -> None:
        try:
            job = self.library.queue().retry(job.id)
        except EngineError as exc:
            self.show_message(exc.message, True)
            return
        self.show_message(f"{job.name}: trying the download again.")
        self.job_added.emit(job)

    def shutdown(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
