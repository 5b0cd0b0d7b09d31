"""The Installed tab: models on this machine, files that are not models, remove / reveal / add.

Scanning the models folder and judging each model (which reads its GGUF
header, and unpacks the demo model the first time) run on the library's
one-thread pool; the table fills in as results arrive.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QThreadPool, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.open_external import reveal_path
from desktop.pages.models.table_models import ITEM_ROLE, InstalledTableModel
from desktop.widgets.labels import banner_label
from desktop.widgets.list_table import list_table_view
from desktop.workers.background import BackgroundTask, run_in_background
from engines.byte_sizes import format_bytes
from engines.errors import EngineError
from engines.library.advisor import Advisor
from engines.library.installed import InstalledModel
from engines.library.service import ModelLibrary, UnknownFile
from engines.machine.speed import format_speed
from engines.remote import RemoteModel, RemoteServers, remote_models


def deletes_files(library: ModelLibrary, model: InstalledModel) -> bool:
    """Whether removing *model* deletes its files (only inside Atelier's models folder)."""
    path = Path(model.path)
    return path.exists() and path.resolve().is_relative_to(library.paths.models.resolve())


class InstalledTab(QWidget):
    model_added = Signal(str)  # model id ("Add model file…")
    model_removed = Signal(str)
    models_changed = Signal()  # after every refresh: the catalog's "Installed" marks follow

    def __init__(self, library: ModelLibrary, pool: QThreadPool, parent=None, advisor: Advisor | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.advisor = advisor or Advisor(library)  # adds the expected and measured speeds
        self.pool = pool
        self._tasks: list[BackgroundTask] = []
        self.loaded = False  # True after the first scan has finished
        self.remote_dialog = None  # the open "Add remote server…" dialog, if any
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 12, 0, 0)
        layout.setSpacing(8)

        toolbar = QHBoxLayout()
        self.add_button = QPushButton("Add model file…")
        self.add_button.setObjectName("Primary")
        self.add_button.clicked.connect(self.choose_file)
        self.remove_button = QPushButton("Remove…")
        self.remove_button.clicked.connect(self.remove_selected)
        self.reveal_button = QPushButton("Reveal in folder")
        self.reveal_button.clicked.connect(self.reveal_selected)
        self.remote_button = QPushButton("Add remote server…")
        self.remote_button.setToolTip("Chat with the models of a bigger machine (vLLM, llama-server, Ollama…)")
        self.remote_button.clicked.connect(self.add_remote)
        self.servers = RemoteServers.beside(library.models.file)
        for button in (self.add_button, self.remote_button, self.remove_button, self.reveal_button):
            toolbar.addWidget(button)
        toolbar.addStretch(1)
        self.summary = QLabel()
        self.summary.setObjectName("Muted")
        toolbar.addWidget(self.summary)
        layout.addLayout(toolbar)

        self.banner = banner_label()
        layout.addWidget(self.banner)

        self.model = InstalledTableModel(self)
        self.table = list_table_view(self.model, InstalledTableModel.PATH)
        self.table.setTextElideMode(Qt.ElideMiddle)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._update_buttons())
        self.table.doubleClicked.connect(lambda _i: self.reveal_selected())
        layout.addWidget(self.table, 1)

        self.status = QLabel()
        self.status.setObjectName("StatusLine")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self._update_buttons()

    # ---- refresh ---------------------------------------------------------

    def refresh(self) -> None:
        """Scan the models folder, list everything, then judge each model (all off the GUI thread)."""
        for task in self._tasks:
            task.cancel()
        library, servers = self.library, self.servers

        def scan():
            unknown = library.scan_models_folder()
            models = library.models.all()
            missing = {m.id for m in models if m.source != "demo" and not Path(m.path).exists()}
            sizes = {u.path: Path(u.path).stat().st_size for u in unknown if Path(u.path).is_file()}
            return models, remote_models(servers), unknown, missing, sizes

        if not self.loaded:
            self.summary.setText("Looking in the models folder…")
        self._tasks = [run_in_background(scan, self._listed, self._failed, pool=self.pool)]

    def _listed(self, result) -> None:
        models, remote, unknown, missing, sizes = result
        selected = self.selected()
        old = self.model.verdicts
        self.model.set_rows([*models, *remote], unknown, missing, sizes)
        self.model.set_verdicts({m.id: old[m.id] for m in models if m.id in old})
        self._fit_columns()
        self.loaded = True
        total = sum(m.size_bytes for m in models)
        noun = "model" if len(models) == 1 else "models"
        on_servers = f" · {len(remote)} on remote servers" if remote else ""
        self.summary.setText(f"{len(models)} {noun} · {format_bytes(total)}{on_servers}")
        if self.library.models.problem:  # models.json was set aside, or records in it were refused
            self.show_error(self.library.models.problem)
        if self.servers.problem:  # remotes.json likewise
            self.show_error(self.servers.problem)
        if selected is not None:
            self._select_item(selected)
        self._update_buttons()
        self.models_changed.emit()
        self.refresh_verdicts(models, missing)

    def refresh_verdicts(self, models: list[InstalledModel] | None = None, missing: set[str] | None = None) -> None:
        models = models if models is not None else [r for r in self.model.rows if isinstance(r, InstalledModel)]
        missing = missing if missing is not None else self.model.missing
        advisor = self.advisor

        def judge():
            verdicts, measured = {}, {}
            speeds = advisor.measured()
            for m in models:
                if m.id in missing:
                    verdicts[m.id] = f"The model file is missing: {m.path}"
                    continue
                try:
                    verdicts[m.id] = advisor.installed_verdict(m)
                except EngineError as exc:
                    verdicts[m.id] = exc.message
                    continue
                if m.id in speeds:
                    speed = speeds[m.id]
                    short = "measured " + format_speed(speed.value, speed.unit)
                    measured[m.id] = (short, advisor.comparison(speed, verdicts[m.id], advisor.image_base(m)))
            return verdicts, measured

        def judged(result) -> None:
            self.model.set_verdicts(*result)
            self._fit_columns()

        self._tasks.append(run_in_background(judge, judged, self._failed, pool=self.pool))

    def _fit_columns(self) -> None:
        for column in range(self.model.columnCount() - 1):  # the last one (Path) stretches
            self.table.resizeColumnToContents(column)
            width = min(self.table.columnWidth(column) + 14, 340)
            self.table.setColumnWidth(column, width)

    def _failed(self, error) -> None:
        self.show_error(error.message if isinstance(error, EngineError) else str(error))
        if not self.loaded:
            self.summary.clear()

    def show_error(self, message: str) -> None:
        self.banner.setText(message)
        self.banner.setVisible(bool(message))

    # ---- selection -------------------------------------------------------

    def selected(self) -> InstalledModel | RemoteModel | UnknownFile | None:
        index = self.table.selectionModel().currentIndex()
        return index.data(ITEM_ROLE) if index.isValid() else None

    def select_model(self, model_id: str) -> bool:
        return self._select_item(next((r for r in self.model.rows if isinstance(r, InstalledModel) and r.id == model_id), None))

    def _select_item(self, item) -> bool:
        key = getattr(item, "id", None) or getattr(item, "path", None)
        for row, candidate in enumerate(self.model.rows):
            if key is not None and (getattr(candidate, "id", None) or candidate.path) == key:
                self.table.selectRow(row)
                return True
        return False

    def _update_buttons(self) -> None:
        item = self.selected()
        self.remove_button.setEnabled(isinstance(item, (InstalledModel, RemoteModel)))
        self.reveal_button.setEnabled(item is not None and not isinstance(item, RemoteModel))

    # ---- actions ---------------------------------------------------------

    def remove_selected(self) -> None:
        model = self.selected()
        if isinstance(model, RemoteModel):
            self.remove_remote(model)
            return
        if not isinstance(model, InstalledModel):
            return
        if deletes_files(self.library, model):
            detail = f"Its files are in Atelier's models folder and will be deleted:\n{model.path}"
        else:
            detail = f"Atelier will forget it; the file stays where it is:\n{model.path}"
        answer = QMessageBox.question(self, "Remove model", f"Remove {model.name}?\n\n{detail}",
                                      QMessageBox.Yes | QMessageBox.Cancel, QMessageBox.Cancel)
        if answer != QMessageBox.Yes:
            return
        try:
            message = self.library.remove(model.id)
        except EngineError as exc:
            self.show_error(exc.message)
            return
        self.show_error("")
        self.status.setText(message)
        self.model_removed.emit(model.id)
        self.refresh()

    def reveal_selected(self) -> None:
        item = self.selected()
        if item is None or isinstance(item, RemoteModel):
            return
        reveal_path(item.path, self.show_error)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a GGUF model file", str(Path.home()), "GGUF models (*.gguf)")
        if path:
            self.import_file(path)

    def import_file(self, path: str) -> None:
        """Identify the file or folder and register it (off the GUI thread): what "Add model file…" and drops use."""
        from engines.library.importer import import_model

        self.status.setText(f"Reading {Path(path).name}…")
        store = self.library.models

        def added(model: InstalledModel) -> None:
            self.show_error("")
            self.status.setText(f"Added {model.name}. The file stays where it is: {model.path}")
            self.model_added.emit(model.id)
            self.refresh()

        def failed(error) -> None:
            self.status.clear()
            self._failed(error)

        self._tasks.append(run_in_background(lambda: import_model(path, store), added, failed, pool=self.pool))

    # ---- remote servers --------------------------------------------------

    def add_remote(self) -> None:
        """"Add remote server…": the dialog checks the server, then its models join this list."""
        from desktop.pages.models.remote_dialog import AddRemoteDialog

        dialog = AddRemoteDialog(self.servers, self)
        dialog.added.connect(self._remote_added)
        dialog.open()
        self.remote_dialog = dialog  # for tests and screenshots

    def _remote_added(self, added) -> None:
        self.show_error("")
        self.status.setText(added.summary())
        self.model_added.emit(f"{added.server.name}/{added.models[0].id}" if added.models else "")
        self.refresh()

    def remove_remote(self, model: RemoteModel) -> None:
        server = model.server
        count = len(server.models)
        answer = QMessageBox.question(
            self, "Remove remote server",
            f"Remove the remote server '{server.name}' ({server.base_url})?\n\nIts {count} "
            f"{'model' if count == 1 else 'models'} will no longer be offered; nothing on the server changes."
            + ("\nIts key will be removed from the system keyring." if server.key_in_keyring else ""),
            QMessageBox.Yes | QMessageBox.Cancel, QMessageBox.Cancel)
        if answer != QMessageBox.Yes:
            return
        from engines.remote.manage import remove_server

        try:
            remove_server(self.servers, server.name)
        except EngineError as exc:
            self.show_error(exc.message)
            return
        self.show_error("")
        self.status.setText(f"Removed the remote server '{server.name}'.")
        self.model_removed.emit(model.id)
        self.refresh()

    def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
