"""A page for a capability that is on its way (Images, Models)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget


class PlaceholderPage(QWidget):
    def __init__(self, title: str, body: str, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        heading = QLabel(title)
        heading.setObjectName("PageTitle")
        heading.setAlignment(Qt.AlignCenter)
        text = QLabel(body)
        text.setObjectName("Muted")
        text.setWordWrap(True)
        text.setAlignment(Qt.AlignCenter)
        text.setMaximumWidth(520)
        layout.addWidget(heading)
        layout.addWidget(text, 0, Qt.AlignHCenter)
        layout.addStretch(2)
