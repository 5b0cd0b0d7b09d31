"""The Server page's lower half: the request log, the loaded models (with Unload) and the queue, as tabs.

Everything here reads snapshots: the scheduler's (what is loaded, who
waits for what) and the request log's (how each API request ended). The
page calls :meth:`ServerActivity.refresh` once a second while it is shown;
the tables only repaint what changed (see tables.py for what that costs).

The loaded models are the whole app's, not only the API's: the server
shares the window's scheduler, so a model the chat page loaded is listed
here, and the API answers with it.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.pages.server.tables import LoadedModelsTable, QueueTable, RequestLogTable
from desktop.widgets.list_table import list_table_view

LOG_NOTE = ("Each request, when it ends: who asked, for which model, how it ended and how many tokens (prompt + "
            "reply). Never what was said.")
LOADED_NOTE = ("Models load on their first request, from the chat page, the images page or the API, and unload "
               "after 10 minutes idle.")
QUEUE_NOTE = ("Requests take turns, fairly between the app's pages and each API client; beyond 16 waiting, clients "
              "are asked to retry later (429).")


class ServerActivity(QTabWidget):
    """Tabs: Requests, Loaded models, Queue (each titled with its count); the page adds "How to connect"."""

    def __init__(self, scheduler, log_entries: Callable[[], list], model_name: Callable[[str, object], str],
                 say: Callable[[str], None], parent=None) -> None:
        super().__init__(parent)
        self._scheduler = scheduler
        self._log_entries = log_entries  # the request log's entries, oldest first ([] before the first start)
        self._say = say  # a short note under the connection settings
        self.log_table = RequestLogTable(self)
        self.log_view = _fitted(list_table_view(self.log_table, 4))
        self.addTab(_tab(self.log_view, LOG_NOTE), "Requests")
        self.loaded_table = LoadedModelsTable(model_name, self)
        self.loaded_view = _fitted(list_table_view(self.loaded_table, 0))
        self.loaded_view.selectionModel().selectionChanged.connect(lambda *_: self._update_unload())
        self.unload_button = QPushButton("Unload")
        self.unload_button.setToolTip("End the model's engine and give its memory back; it loads again when asked")
        self.unload_button.clicked.connect(self.unload_selected)
        self.addTab(_tab(self.loaded_view, LOADED_NOTE, self.unload_button), "Loaded models")
        self.queue_table = QueueTable(self.loaded_table.display_name, self)
        self.queue_view = _fitted(list_table_view(self.queue_table, 1))
        self.addTab(_tab(self.queue_view, QUEUE_NOTE), "Queue")
        self._update_unload()

    def refresh(self) -> None:
        """Read the snapshots into the tables, and the counts into the tab titles."""
        state = self._scheduler.snapshot()
        self.loaded_table.update(state.loaded)
        self.queue_table.update(state)
        self.log_table.update(self._log_entries())
        for index, (name, count) in enumerate((("Requests", len(self.log_table.rows)),
                                               ("Loaded models", len(self.loaded_table.rows)),
                                               ("Queue", len(self.queue_table.rows)))):
            text = f"{name} ({count})" if count else name
            if self.tabText(index) != text:
                self.setTabText(index, text)
        self._update_unload()

    def _update_unload(self) -> None:
        rows = self.loaded_view.selectionModel().selectedRows()
        self.unload_button.setEnabled(bool(rows) and self.loaded_table.item(rows[0].row()) is not None)

    def unload_selected(self) -> None:
        """Unload the selected model now (after a question when it is answering a request or loading)."""
        rows = self.loaded_view.selectionModel().selectedRows()
        model = self.loaded_table.item(rows[0].row()) if rows else None
        if model is None:
            return
        name = self.loaded_table.cell(rows[0].row(), 0)
        if model.state in ("busy", "loading") and QMessageBox.question(
                self, "Unload the model",
                f"{name} is {'answering a request' if model.state == 'busy' else 'loading'} now. Unload it anyway?"
                "\n\nThe request stops; whoever sent it is told so.") != QMessageBox.Yes:
            return
        self._scheduler.unload(model.key, wait=False)
        self._say(f"Unloading {name}: its memory goes back to the system. It loads again on its next request.")
        self.refresh()


def _fitted(view):
    """Every column as wide as what it shows (the visible rows only: cheap with 500 logged requests), but the
    stretching one (the model), which takes the rest: addresses and paths are not cut at 1024 pixels."""
    header = view.horizontalHeader()
    header.setResizeContentsPrecision(0)
    for column in range(view.model().columnCount()):
        if header.sectionResizeMode(column) != QHeaderView.Stretch:
            header.setSectionResizeMode(column, QHeaderView.ResizeToContents)
    return view


def _tab(view, note: str, *buttons) -> QWidget:
    tab = QWidget()
    layout = QVBoxLayout(tab)
    layout.setContentsMargins(8, 8, 8, 8)
    layout.addWidget(view, 1)
    foot = QHBoxLayout()
    words = QLabel(note)
    words.setObjectName("Muted")
    words.setWordWrap(True)
    foot.addWidget(words, 1)
    for button in buttons:
        foot.addWidget(button)
    layout.addLayout(foot)
    return tab
