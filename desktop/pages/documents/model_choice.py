"""The embedding model of a collection: the installed ones to choose from, and what to do when there are none.

The library knows the installed embedding models (``kind == "embedding"``:
a GGUF the probe found to be one, from the catalog, a download or a file
the user added). A collection remembers its model's path; one whose model
was removed from the library is still shown, marked, so the user sees why
indexing would fail and can choose another (which re-indexes).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

NO_MODEL = (
    "No embedding model is installed. Documents are searched with one: get it on the Models page, under Catalog "
    "(all-MiniLM-L6-v2 is small and fast for English, BGE small en v1.5 and nomic-embed-text v1.5 are more "
    "precise, multilingual-e5-small reads many languages), or add a GGUF embedding model file there. It runs on "
    "this computer; nothing is uploaded."
)


class NoModelBanner(QWidget):
    """The banner shown while no embedding model is installed, with a button to the Models page."""

    models_requested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel(NO_MODEL)
        self.label.setObjectName("Banner")
        self.label.setWordWrap(True)
        layout.addWidget(self.label)
        row = QHBoxLayout()
        self.button = QPushButton("Open the Models page")
        self.button.clicked.connect(self.models_requested)
        row.addWidget(self.button)
        row.addStretch(1)
        layout.addLayout(row)


class ModelCombo(QComboBox):
    """The installed embedding models (data: (path, name)); a collection's missing model is added, marked."""

    def set_models(self, models, current_path: str | None = None, current_name: str = "") -> None:
        self.blockSignals(True)
        self.clear()
        for model in models:
            self.addItem(model.name, (model.path, model.name))
            self.setItemData(self.count() - 1, model.path, 3)  # the tooltip: where it is
        if current_path:
            index = self.index_of(current_path)
            if index < 0:
                self.addItem(f"{current_name or Path(current_path).stem} (not installed)", (current_path, current_name))
                index = self.count() - 1
            self.setCurrentIndex(index)
        self.blockSignals(False)

    def index_of(self, path: str) -> int:
        wanted = _same(path)
        return next((i for i in range(self.count()) if _same(self.itemData(i)[0]) == wanted), -1)

    def chosen(self) -> tuple[str, str] | None:
        """(path, name) of the model shown, or None."""
        return self.currentData()


def _same(path: str) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return path
