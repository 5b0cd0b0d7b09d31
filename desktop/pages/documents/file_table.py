"""The files of one collection and their state, as the Documents page lists them.

Rows are :func:`engines.documents.file_status` dicts: ``state`` (indexed,
changed, deleted, partial, pending, skipped), ``reason`` for a skipped
file, ``note`` (a scanned PDF's pages without text...), ``passages`` and
``pages``. The detail column says what the user can do about a file; the
full path is the tooltip of its name.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QColor

from desktop.widgets.list_table import DISPLAY, ListTableModel

TOOLTIP = int(Qt.ItemDataRole.ToolTipRole.value)
FOREGROUND = int(Qt.ItemDataRole.ForegroundRole.value)

STATE_WORDS = {
    "indexed": "Indexed",
    "changed": "Changed",
    "deleted": "Deleted",
    "partial": "Partial",
    "pending": "Pending",
    "skipped": "Skipped",
    "indexing": "Partial",
}
STATE_HINTS = {
    "changed": "changed on disk since it was indexed; Index updates it",
    "deleted": "no longer on disk; Index removes it from the collection",
    "partial": "part of it is indexed; Index resumes after what is stored",
    "pending": "not indexed yet",
}
_WARN = {"skipped": QColor("#b35900"), "changed": QColor("#9a6700"), "deleted": QColor("#9a6700"),
         "partial": QColor("#9a6700")}


def detail_of(row: dict) -> str:
    """What the detail column says: the reason of a skipped file, else what is stored and what to do."""
    if row["state"] == "skipped":
        return row["reason"] or "skipped"
    parts = []
    if row["state"] in ("indexed", "changed", "partial") and row.get("passages"):
        passages = row["passages"]
        parts.append(f"{passages} passage{'s' if passages != 1 else ''}")
    if row.get("pages"):
        parts.append(f"{row['pages']} page{'s' if row['pages'] != 1 else ''}")
    hint = STATE_HINTS.get(row["state"])
    if hint:
        parts.append(hint)
    if row.get("note"):
        parts.append(row["note"])
    return "; ".join(parts)


def shown_name(path: str, sources) -> str:
    """The path inside the added folder that holds it (many folders have a README), else the file's name."""
    for source in sources:
        prefix = source.rstrip(os.sep) + os.sep
        if path.startswith(prefix):
            return path[len(prefix):]
    return Path(path).name


class FileTableModel(ListTableModel):
    COLUMNS = ("State", "File", "Details")

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self._names: list[str] = []

    def _items(self) -> list:
        return self.rows

    def set_rows(self, rows: list[dict], sources: list[str] = ()) -> None:
        """``sources``: the collection's folders, so a file is named from its folder (``adduser/README``)."""
        self.beginResetModel()
        self.rows = list(rows)
        self._names = [shown_name(row["path"], sources) for row in self.rows]
        self.endResetModel()

    def data(self, index: QModelIndex, role: int = DISPLAY):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        column = index.column()
        if role == DISPLAY:
            if column == 0:
                return STATE_WORDS.get(row["state"], row["state"])
            if column == 1:
                return self._names[index.row()]
            return detail_of(row)
        if role == TOOLTIP:
            return row["path"] if column == 1 else detail_of(row) if column == 2 else None
        if role == FOREGROUND and column == 0 and row["state"] in _WARN:
            return _WARN[row["state"]]
        return None

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for row in self.rows:
            found[row["state"]] = found.get(row["state"], 0) + 1
        return found
