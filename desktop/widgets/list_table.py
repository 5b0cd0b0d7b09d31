"""Read-only tables over Python lists: the one base model and the one view style, for every page.

The Models page's tables and the Server page's use them. Kept apart from
the pages' own table models so that a page built at start-up (Server) can
have them without importing the Models page's catalog and fit arithmetic
(numpy, requests: half a second).
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

DISPLAY = int(Qt.ItemDataRole.DisplayRole.value)  # a plain int: data() runs for every visible cell on every repaint


class ListTableModel(QAbstractTableModel):
    """A read-only table over a Python list: counts and headers; subclasses give ``data``."""

    COLUMNS: tuple[str, ...] = ()

    def _items(self) -> list:
        raise NotImplementedError

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._items())

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=DISPLAY):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == DISPLAY:
            return self.COLUMNS[section]
        return None


def list_table_view(model, stretch_column: int) -> QTableView:
    """A read-only, row-selecting table with the app's look (no grid, alternating rows, no row numbers)."""
    table = QTableView()
    table.setModel(model)
    table.setSelectionBehavior(QAbstractItemView.SelectRows)
    table.setSelectionMode(QAbstractItemView.SingleSelection)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    table.setAlternatingRowColors(True)
    table.setShowGrid(False)
    table.setWordWrap(False)
    table.verticalHeader().hide()
    table.verticalHeader().setDefaultSectionSize(30)
    header = table.horizontalHeader()
    header.setHighlightSections(False)
    header.setDefaultAlignment(Qt.AlignLeft | Qt.AlignVCenter)
    header.setSectionResizeMode(QHeaderView.Interactive)
    header.setSectionResizeMode(stretch_column, QHeaderView.Stretch)
    return table
