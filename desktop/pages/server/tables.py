"""The Server page's three live tables: loaded models, the queue, and the request log.

Each is refreshed from a snapshot every second while the page is shown, so
``update`` must be cheap: it compares the new rows with the shown ones,
inserts a request that ended on top of the log (and drops the oldest at
the bottom), resets a table only when its rows changed otherwise (a model
loaded), and else repaints only changed cells (the idle times tick),
which keeps the selection; a logged request's words are made once. Measured
here (2 shared cores, load 8.8), the whole page's refresh with 500 logged
requests: 0.06 ms when nothing changed, about 8 ms when a request was
added, nearly all of it Qt repainting the table (the log table's own
update: 0.3 ms; tests/test_gui_server_page.py prints it with ``-s``).

Names come from the profile's installed models (``local/tiny``, not
``tiny.gguf``), looked up once per loaded model, not once per refresh.
"""

from __future__ import annotations

import time
from typing import Callable

from PySide6.QtCore import QModelIndex, Qt

from desktop.widgets.list_table import DISPLAY, ListTableModel
from engines.byte_sizes import format_bytes
from engines.durations import format_duration

TOOLTIP = int(Qt.ItemDataRole.ToolTipRole.value)
ALIGNMENT = int(Qt.ItemDataRole.TextAlignmentRole.value)
RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
IMAGE_ENGINES = ("diffusers", "onnxruntime")
STATES = {"loading": "Loading…", "idle": "Idle", "busy": "Working", "stopping": "Unloading…"}


def kind_of(engine: str, spec) -> str:
    """What a loaded model does, in the words of the Models page."""
    if engine == "remote":
        return "Chat (remote)"
    if engine in IMAGE_ENGINES:
        return "Image"
    return "Embedding" if getattr(spec, "embedding", False) else "Chat"


def client_words(client: str) -> str:
    """Who asked: the pages by name, an API client by its address (the scheduler's ``api:ADDRESS``)."""
    if client.startswith("api:"):
        return f"API {client[4:]}"
    return client[:1].upper() + client[1:]


class _RowsModel(ListTableModel):
    """Rows of display strings; a refresh resets the model only when the rows' identities changed."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[tuple] = []  # (identity, cells, tooltip, item)

    def _items(self) -> list:
        return self.rows

    def _replace(self, rows: list[tuple]) -> bool:
        """Show ``rows``; True when anything changed."""
        old_ids, new_ids = [row[0] for row in self.rows], [row[0] for row in rows]
        moved = new_ids != old_ids
        if moved and not self._grew_at_the_top(old_ids, new_ids, rows):
            self.beginResetModel()
            self.rows = rows
            self.endResetModel()
            return True
        changed = [index for index, (old, new) in enumerate(zip(self.rows, rows)) if old[1:3] != new[1:3]]
        self.rows = rows
        if changed:
            self.dataChanged.emit(self.index(min(changed), 0), self.index(max(changed), len(self.COLUMNS) - 1))
        return moved or bool(changed)

    def _grew_at_the_top(self, old_ids: list, new_ids: list, rows: list[tuple]) -> bool:
        """New rows on top and the oldest gone at the bottom (the log, newest first, as each request ends):
        inserted and removed as such, so the view keeps its selection and scroll position and repaints only
        the new rows, not the whole table as a reset does."""
        known = set(old_ids)
        added = next((index for index, identity in enumerate(new_ids) if identity in known), len(new_ids))
        kept = new_ids[added:]
        if not old_ids or kept != old_ids[:len(kept)] or any(identity in known for identity in new_ids[:added]):
            return False
        if len(kept) < len(old_ids):
            self.beginRemoveRows(QModelIndex(), len(kept), len(old_ids) - 1)
            self.rows = self.rows[:len(kept)]
            self.endRemoveRows()
        if added:
            self.beginInsertRows(QModelIndex(), 0, added - 1)
            self.rows = rows[:added] + self.rows
            self.endInsertRows()
        return True

    def item(self, row: int):
        return self.rows[row][3] if 0 <= row < len(self.rows) else None

    def cell(self, row: int, column: int) -> str:
        return self.rows[row][1][column]

    RIGHT_COLUMNS: tuple[int, ...] = ()

    def data(self, index, role=DISPLAY):
        if not index.isValid():
            return None
        if role == DISPLAY:
            return self.rows[index.row()][1][index.column()]
        if role == TOOLTIP:
            return self.rows[index.row()][2] or None
        if role == ALIGNMENT and index.column() in self.RIGHT_COLUMNS:
            return RIGHT
        return None


class LoadedModelsTable(_RowsModel):
    COLUMNS = ("Model", "Kind", "State", "Memory", "Idle for", "Used by")
    RIGHT_COLUMNS = (3, 4)

    def __init__(self, name_of: Callable[[str, object], str], parent=None) -> None:
        super().__init__(parent)
        self._name_of = name_of  # (engine, spec) -> the installed id, looked up once per model
        self._names: dict = {}
        self._by_file: dict[str, str] = {}  # the scheduler's short name (a file name) -> the installed id

    def display_name(self, short: str) -> str:
        """The installed id of a loaded model the scheduler calls ``short``; ``short`` itself when not loaded."""
        return self._by_file.get(short, short)

    def update(self, loaded) -> bool:
        rows = []
        for model in loaded:
            key = model.key
            if key not in self._names:
                self._names[key] = self._name_of(model.engine, model.spec)
            self._by_file[model.name] = self._names[key]
            memory = model.measured_bytes
            memory_words = format_bytes(memory) if memory is not None else (
                f"~{format_bytes(model.estimated_bytes)}" if model.estimated_bytes else "—")
            if model.measured_vram_bytes:
                memory_words += f" + {format_bytes(model.measured_vram_bytes)} GPU"
            idle = format_duration(model.idle_s) if model.state == "idle" else "—"
            tooltip = (f"{self._names[key]} ({model.name})\nProcess {model.pid or '—'}; memory measured after "
                       "each request (~: estimated before loading)")
            cells = (self._names[key], kind_of(model.engine, model.spec), STATES.get(model.state, model.state),
                     memory_words if model.engine != "remote" else "on the server", idle,
                     ", ".join(client_words(c) for c in reversed(model.clients)))
            rows.append((key, cells, tooltip, model))
        return self._replace(rows)


class QueueTable(_RowsModel):
    COLUMNS = ("Who", "Model", "State", "For")
    RIGHT_COLUMNS = (3,)

    def __init__(self, name_of: Callable[[str], str], parent=None) -> None:
        super().__init__(parent)
        self._name_of = name_of  # a file name -> the installed id, when known

    def update(self, state) -> bool:
        rows = []
        for work in state.running:
            rows.append((work.ticket_id, (client_words(work.client), self._name_of(work.model), "Running",
                                          format_duration(work.waiting_s)), None, work))
        for position, work in enumerate(state.queued, start=1):
            rows.append((work.ticket_id, (client_words(work.client), self._name_of(work.model),
                                          f"Waiting ({position} of {len(state.queued)})",
                                          format_duration(work.waiting_s)), None, work))
        return self._replace(rows)


class RequestLogTable(_RowsModel):
    """Newest first. Never a prompt or a reply: the log has none (engines/server/request_log.py)."""

    COLUMNS = ("Time", "Client", "Method", "Path", "Model", "Status", "Duration", "Tokens")
    RIGHT_COLUMNS = (5, 6, 7)

    def update(self, entries) -> bool:
        if len(entries) == len(self.rows) and all(new is row[3] for new, row in zip(reversed(entries), self.rows)):
            return False  # the same entries (a logged entry changes by replacement, so identity says it all)
        shown = {row[0]: row for row in self.rows}  # an entry's words are made once, not each second
        rows = []
        for entry in reversed(entries):
            row = shown.get(entry.id)
            rows.append(row if row is not None and row[3] is entry else
                        (entry.id, _log_cells(entry), _log_tooltip(entry), entry))
        return self._replace(rows)


def _log_cells(entry) -> tuple:
    status = "—" if entry.status is None else str(entry.status)
    if entry.finish and entry.finish != "stop":
        status += f" · {entry.finish}"
    tokens = "" if entry.prompt_tokens is None and entry.completion_tokens is None else \
        f"{entry.prompt_tokens or 0} + {entry.completion_tokens or 0}"
    duration = "" if entry.duration_s is None else f"{entry.duration_s:.2f} s"
    return (time.strftime("%H:%M:%S", time.localtime(entry.time)), entry.client, entry.method, entry.path,
            entry.model or "", status, duration, tokens)


def _log_tooltip(entry) -> str:
    return entry.line() + "\n(tokens: prompt + reply)"
