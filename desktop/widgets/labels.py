"""Small label factories shared by every page, so messages look the same everywhere."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel


def banner_label(object_name: str = "Banner") -> QLabel:
    """A hidden, word-wrapped, selectable message strip (errors and notices, never dialogs)."""
    label = QLabel()
    label.setObjectName(object_name)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    label.hide()
    return label
