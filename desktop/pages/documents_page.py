"""The Documents page: collections of your own files, indexed on this computer, to chat with.

A collection is a name, an embedding model and the folders and files put
in it (dropped on the page or chosen). Indexing runs in the background on
the window's one scheduler (:mod:`desktop.pages.documents.indexer`), so it
takes turns with chat and images; the bar shows files, passages and the
time left, Pause keeps what was embedded and Index resumes after it. The
table shows each file's state (:func:`engines.documents.file_status`):
indexed, changed, deleted, partial, pending, or skipped with its reason.
Removing a file or a collection asks first and deletes its passages and
vectors. Every call goes through :class:`engines.documents.DocumentLibrary`,
the same API the ``atelier docs`` command uses; reads of the index are
short SQLite queries, the indexing and removal run off the GUI thread.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from desktop.pages.documents.file_table import FileTableModel
from desktop.pages.documents.indexer import IndexRunner
from desktop.pages.documents.model_choice import ModelCombo, NoModelBanner
from desktop.pages.documents.progress_text import progress_words, summary_words
from desktop.widgets.labels import banner_label
from desktop.widgets.list_table import list_table_view
from engines.errors import EngineError

CLIENT = "documents page"  # whom the scheduler's fair queue serves
DROP_HINT = "Drop folders and files here: PDF, DOCX, EPUB, HTML, Markdown, text and source code."
TABLE_REFRESH_MS = 500  # while indexing, the file list is read again at most this often


class DocumentsPage(QWidget):
    collections_changed = Signal()  # made, removed: the chat's Documents box offers them
    models_requested = Signal()  # "Open the Models page"

    def __init__(self, workspace, scheduler, parent=None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self._scheduler = scheduler
        self._library = None  # made when the page is first shown (engines.documents imports numpy and the GGUF reader)
        self.runner = IndexRunner(lambda: self.library)  # no parent: its thread may outlive the page at close
        self.setAcceptDrops(True)
        self._removal = None
        self._last_table_read = 0.0
        self._walked: dict[str, list[str]] = {}  # the collection shown: the files its folders hold
        self._queued: list[str] = []  # collections to index when the run in hand ends
        # Replaced by tests; the page asks before anything is deleted.
        self.confirm = lambda title, text: QMessageBox.question(
            self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No) == QMessageBox.StandardButton.Yes

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        left = QWidget()
        left.setMinimumWidth(200)
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(12, 12, 8, 12)
        heading = QLabel("Collections")
        heading.setObjectName("PageTitle")
        left_layout.addWidget(heading)
        self.collection_list = QListWidget()
        left_layout.addWidget(self.collection_list, 1)
        self.new_button = QPushButton("New collection…")
        self.new_button.setObjectName("Primary")
        self.remove_collection_button = QPushButton("Remove collection…")
        left_layout.addWidget(self.new_button)
        left_layout.addWidget(self.remove_collection_button)
        splitter.addWidget(left)

        right = QWidget()
        body = QVBoxLayout(right)
        body.setContentsMargins(16, 12, 16, 12)
        self.title = QLabel("Documents")
        self.title.setObjectName("PageTitle")
        body.addWidget(self.title)
        self.intro = QLabel("Chat with your own files, privately: they are read and searched on this computer. "
                            "Attach a collection to a chat in the chat's Documents box.")
        self.intro.setObjectName("Muted")
        self.intro.setWordWrap(True)
        body.addWidget(self.intro)
        self.no_model = NoModelBanner()
        self.no_model.models_requested.connect(self.models_requested)
        body.addWidget(self.no_model)
        self.banner = banner_label()
        body.addWidget(self.banner)
        model_row = QHBoxLayout()
        model_row.addWidget(QLabel("Embedding model"))
        self.model_combo = ModelCombo()
        self.model_combo.setToolTip("The model that turns passages into vectors. Another model for a collection "
                                    "indexes it again.")
        model_row.addWidget(self.model_combo, 1)
        body.addLayout(model_row)
        self.sources_label = QLabel()
        self.sources_label.setObjectName("Muted")
        self.sources_label.setWordWrap(True)
        self.sources_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        body.addWidget(self.sources_label)
        buttons = QHBoxLayout()
        self.add_folder_button = QPushButton("Add folder…")
        self.add_files_button = QPushButton("Add files…")
        self.index_button = QPushButton("Index")
        self.index_button.setObjectName("Primary")
        self.index_button.setToolTip("Bring the index up to date: new and changed files are read, deleted ones "
                                     "leave it; a paused run resumes")
        self.remove_files_button = QPushButton("Remove file…")
        self.remove_files_button.setToolTip("Take the selected file (or the folder it was added with) out of the "
                                            "collection; its passages are deleted")
        for button in (self.add_folder_button, self.add_files_button, self.index_button, self.remove_files_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        body.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(False)
        self.progress_bar.hide()
        body.addWidget(self.progress_bar)
        self.progress_label = QLabel()
        self.progress_label.setObjectName("StatusLine")
        self.progress_label.setWordWrap(True)
        body.addWidget(self.progress_label)
        self.drop_hint = QLabel(DROP_HINT)
        self.drop_hint.setObjectName("Muted")
        self.drop_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        body.addWidget(self.drop_hint)
        self.files = FileTableModel()
        self.table = list_table_view(self.files, stretch_column=2)
        self.table.setColumnWidth(0, 90)
        self.table.setColumnWidth(1, 260)
        body.addWidget(self.table, 1)
        self.counts_label = QLabel()
        self.counts_label.setObjectName("Muted")
        body.addWidget(self.counts_label)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([220, 900])

        self._table_timer = QTimer(self)
        self._table_timer.setSingleShot(True)
        self._table_timer.timeout.connect(self.show_files)
        self.collection_list.currentTextChanged.connect(lambda _name: self._collection_selected())
        self.new_button.clicked.connect(self._ask_new_collection)
        self.remove_collection_button.clicked.connect(self._ask_remove_collection)
        self.add_folder_button.clicked.connect(self._choose_folder)
        self.add_files_button.clicked.connect(self._choose_files)
        self.index_button.clicked.connect(self._index_clicked)
        self.remove_files_button.clicked.connect(self._ask_remove_file)
        self.model_combo.activated.connect(self._model_chosen)
        # Del removes what has the focus, after the same confirmation as the buttons
        # (setContext, not the constructor's context=, which PySide6 drops in this form: two window-wide Dels
        # would be ambiguous and neither would fire)
        for widget, slot in ((self.table, self._ask_remove_file), (self.collection_list, self._ask_remove_collection)):
            shortcut = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), widget)
            shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
            shortcut.activated.connect(slot)
        self.runner.started.connect(self._run_started)
        self.runner.progress.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)
        self.title.setText("Documents")  # the rest is read when the page is first shown (showEvent)

    @property
    def library(self):
        """The profile's documents index, on the window's scheduler (the same API as ``atelier docs``)."""
        if self._library is None:
            from engines.documents import DocumentLibrary

            self._library = DocumentLibrary(self.workspace.paths.data, self._scheduler, client=CLIENT)
            try:
                with self._library.store() as store:  # a damaged index is set aside with a sentence: say it once
                    if store.problem:
                        self.show_banner(store.problem)
            except EngineError as exc:
                self.show_banner(exc.message)
        return self._library

    # ---- what is shown ---------------------------------------------------

    def embedding_models(self) -> list:
        return self.workspace.models.runnable("embedding")

    def current(self) -> str | None:
        item = self.collection_list.currentItem()
        return item.text() if item is not None else None

    def refresh(self, select: str | None = None) -> None:
        """Read the collections and the models again (the Models page may have added one)."""
        wanted = select or self.current()
        try:
            names = [c.name for c in self.library.collections()]
        except EngineError as exc:
            self.show_banner(exc.message)
            names = []
        self.collection_list.blockSignals(True)
        self.collection_list.clear()
        self.collection_list.addItems(names)
        if names:
            rows = [i for i, name in enumerate(names) if name == wanted]
            self.collection_list.setCurrentRow(rows[0] if rows else 0)
        self.collection_list.blockSignals(False)
        self.no_model.setVisible(not self.embedding_models())
        self._collection_selected()

    def _collection_selected(self) -> None:
        self._walked = {}
        name = self.current()
        collection = None
        if name:
            try:
                collection = self.library.collection(name)
            except EngineError as exc:
                self.show_banner(exc.message)
        self.model_combo.set_models(self.embedding_models(), collection.model_path if collection else None,
                                    collection.model_name if collection else "")
        self.title.setText(name or "Documents")
        for button in (self.add_folder_button, self.add_files_button, self.index_button, self.remove_files_button,
                       self.remove_collection_button):
            button.setEnabled(collection is not None)
        if self.runner.running:
            self.index_button.setEnabled(self.runner.collection == name)
        self.show_files()

    def show_files(self) -> None:
        from engines.documents import file_status

        self._last_table_read = time.monotonic()
        name = self.current()
        rows, sources = [], []
        if name:
            try:
                rows = [file_status(record) for record in self.library.files(name)]
                sources = self.library.sources(name)
            except EngineError as exc:
                self.show_banner(exc.message)
        if name:
            rows += self._pending_rows(name, {row["path"] for row in rows})
        self.files.set_rows(rows, sources)
        self.sources_label.setText(("Folders and files: " + "; ".join(sources)) if sources else
                                   ("Nothing in it yet: add folders or files, or drop them here." if name else
                                    "Make a collection to start: give it a name, then add folders and files."))
        counts = self.files.counts()
        self.counts_label.setText(", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
                                  if rows else "")

    def _pending_rows(self, name: str, known: set[str]) -> list[dict]:
        """Files in the collection's folders that no run has reached yet, listed as pending.

        The folders are walked when the collection is shown and when a run
        starts or ends, not at every progress redraw (a large tree takes a
        moment to walk).
        """
        from engines.doc_index.readers import format_of, unsupported_reason

        if name not in self._walked:
            try:
                found, _unusable = self.library.walk(name)
            except (EngineError, OSError):
                found = []
            self._walked = {name: found}
        # a kind of file Atelier does not read is said at once: the run will skip it with this reason
        return [{"path": path, "state": "pending" if format_of(path) else "skipped",
                 "reason": "" if format_of(path) else unsupported_reason(path), "note": "", "format": "",
                 "pages": None, "passages": 0, "size": 0} for path in self._walked[name] if path not in known]

    def show_banner(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    # ---- collections -------------------------------------------------------

    def _ask_new_collection(self) -> None:
        if not self.embedding_models():
            self.show_banner("Install an embedding model first (see above): a collection is searched with one.")
            return
        name, ok = QInputDialog.getText(self, "New collection", "Name of the collection:")
        if ok and name.strip():
            self.create_collection(name.strip())

    def create_collection(self, name: str, paths: list[str] | None = None) -> bool:
        """Make the collection with the embedding model shown; index it at once when it has files."""
        self.refresh_models_only()
        chosen = self.model_combo.chosen()
        if chosen is None:
            self.show_banner("Install an embedding model first (see above): a collection is searched with one.")
            return False
        if any(self.collection_list.item(i).text() == name for i in range(self.collection_list.count())):
            self.show_banner(f"There is already a collection named '{name}': choose another name.")
            return False
        try:
            self.library.add(name, paths or [], chosen[0], chosen[1])
        except EngineError as exc:
            self.show_banner(exc.message)
            return False
        self.show_banner("")
        self.refresh(select=name)
        self.collections_changed.emit()
        if paths:
            self.start_indexing(name)
        return True

    def refresh_models_only(self) -> None:
        self.no_model.setVisible(not self.embedding_models())
        if self.model_combo.count() == 0:
            self.model_combo.set_models(self.embedding_models())

    def _ask_remove_collection(self) -> None:
        name = self.current()
        if name and self.confirm("Remove collection", f"Remove the collection '{name}'? Its passages and vectors "
                                 "are deleted from the index; your files themselves are not touched."):
            self.remove_collection(name)

    def remove_collection(self, name: str) -> None:
        from desktop.workers.background import run_in_background

        if self.runner.running and self.runner.collection == name:
            self.show_banner(f"'{name}' is being indexed: pause it first, then remove it.")
            return
        if name in self._queued:
            self._queued.remove(name)
        self.progress_label.setText(f"Removing '{name}'…")
        self._removal = run_in_background(lambda: self.library.remove(name), on_done=lambda r: self._removed(name, r),
                                          on_error=self._removal_failed)

    def _removed(self, name: str, result) -> None:
        files, passages = result
        self._removal = None
        self.progress_label.setText(f"Removed '{name}': {files} files and {passages} passages deleted from the index.")
        self.refresh()
        self.collections_changed.emit()

    def _removal_failed(self, error) -> None:
        self._removal = None
        self.progress_label.setText("")
        self.show_banner(getattr(error, "message", None) or str(error))
        self.refresh()

    def _model_chosen(self, _index: int) -> None:
        """Another model for the collection shown: it is indexed again with it, after a confirmation."""
        name, chosen = self.current(), self.model_combo.chosen()
        if not name or chosen is None:
            return
        collection = self.library.collection(name)
        if os.path.abspath(chosen[0]) == os.path.abspath(collection.model_path):
            return
        if self.runner.running or not self.confirm(
                "Change the embedding model", f"Index '{name}' again with {chosen[1]}? Every file is embedded "
                "again; until then the collection answers from what is re-indexed."):
            self._collection_selected()
            return
        try:
            self.library.add(name, [], chosen[0], chosen[1])
        except EngineError as exc:
            self.show_banner(exc.message)
            return
        self.start_indexing(name)

    # ---- files -----------------------------------------------------------------

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder", str(Path.home()))
        if folder:
            self.add_paths([folder])

    def _choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add files", str(Path.home()))
        if files:
            self.add_paths(files)

    def add_paths(self, paths: list[str]) -> bool:
        """Add folders and files to the collection shown and index them (a new collection is asked for first)."""
        name = self.current()
        if name is None:
            if not self.embedding_models():
                self.show_banner("Install an embedding model first (see above): a collection is searched with one.")
                return False
            suggested = Path(paths[0]).name if len(paths) == 1 else "My documents"
            name, ok = QInputDialog.getText(self, "New collection", "Name of the collection:", text=suggested)
            return bool(ok and name.strip()) and self.create_collection(name.strip(), paths)
        try:
            self.library.add(name, paths)
        except EngineError as exc:
            self.show_banner(exc.message)
            return False
        self.show_banner("")
        self._walked = {}
        self.show_files()
        self.start_indexing(name)
        return True

    def _ask_remove_file(self) -> None:
        name, rows = self.current(), self.table.selectionModel().selectedRows()
        if not name:
            return
        if not rows:
            self.show_banner("Select a file in the list first.")
            return
        path = self.files.rows[rows[0].row()]["path"]
        if self.confirm("Remove file", f"Take {Path(path).name} out of '{name}'? Its passages are deleted from the "
                        "index; the file itself is not touched."):
            self.remove_file(name, path)

    def remove_file(self, name: str, path: str) -> None:
        """Take one file (or a folder added as such) out of the collection, with its passages and vectors.

        A file found in an added folder stays out at the next Index (the library remembers it was taken
        out, as with ``atelier docs remove``) until it is added again; the page says so.
        """
        try:
            inside_folder = path not in self.library.sources(name)
            files, passages = self.library.remove(name, [path])
        except EngineError as exc:
            self.show_banner(exc.message)
            return
        again = (" It stays out of the collection's folder until you add it again.") if inside_folder else ""
        self.progress_label.setText(f"Removed {Path(path).name}: {files} file and {passages} passages deleted "
                                    f"from the index.{again}")
        self._walked = {}
        self.show_files()

    # ---- indexing -----------------------------------------------------------

    def _index_clicked(self) -> None:
        if self.runner.running:
            self.runner.pause()
            self.index_button.setEnabled(False)
            self.progress_label.setText("Pausing after the file in hand…")
        elif self.current():
            self.start_indexing(self.current())

    def start_indexing(self, name: str) -> bool:
        """Index ``name`` now, or right after the run in hand (one run at a time: they share the CPU)."""
        if self.runner.running:
            if name != self.runner.collection and name not in self._queued:
                self._queued.append(name)
            if name != self.runner.collection:
                self.show_banner(f"'{name}' is indexed when '{self.runner.collection}' is done.")
            return False
        return self.runner.start(name)

    def _start_next(self) -> None:
        while self._queued:
            name = self._queued.pop(0)
            if self.runner.start(name):
                return

    def _run_started(self, name: str) -> None:
        self._walked = {}
        self.show_banner("")
        self.progress_bar.setRange(0, 0)  # busy until the walk has counted the files
        self.progress_bar.show()
        self.progress_label.setText(f"Indexing '{name}'…")
        self.index_button.setText("Pause")
        self.index_button.setToolTip("Pause after the file in hand; Index resumes where it stopped")
        self.index_button.setEnabled(self.current() == name)

    def _on_progress(self, name: str, progress) -> None:
        self.progress_bar.setRange(0, max(1, progress.files_total))
        self.progress_bar.setValue(progress.files_done)
        self.progress_label.setText(f"Indexing '{name}': {progress_words(progress)}")
        if name == self.current() and not self._table_timer.isActive():
            wait = TABLE_REFRESH_MS - (time.monotonic() - self._last_table_read) * 1000
            self._table_timer.start(max(0, int(wait)))

    def _run_ended(self) -> None:
        self._walked = {}
        self.progress_bar.hide()
        self.index_button.setText("Index")
        self.index_button.setToolTip("Bring the index up to date: new and changed files are read, deleted ones "
                                     "leave it; a paused run resumes")
        self.index_button.setEnabled(self.current() is not None)
        self.show_files()

    def _on_finished(self, name: str, summary) -> None:
        self._run_ended()
        self.progress_label.setText(f"'{name}': {summary_words(summary)}")
        if summary.stopped:
            self._queued.clear()  # Pause stops the runs waiting too
        self._start_next()

    def _on_failed(self, name: str, message: str) -> None:
        self._run_ended()
        self.progress_label.setText("")
        self.show_banner(f"Indexing '{name}' stopped: {message}")
        self._start_next()

    # ---- drag and drop ---------------------------------------------------------

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            self.add_paths(paths)
        event.acceptProposedAction()

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        self.refresh()  # a model installed or a collection made on the command line meanwhile

    def shutdown(self) -> None:
        self._table_timer.stop()
        if self._removal is not None:
            self._removal.cancel()
        self.runner.shutdown()
