"""A strip above the chat that says the chat history could not be opened normally, and offers recovery.

It stays until the user dismisses it (the problem does not go away by
itself), unlike the chat page's banner, which belongs to one action.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QPushButton, QVBoxLayout

from desktop.widgets.labels import banner_label


class HistoryNotice(QFrame):
    recover_requested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("HistoryNotice")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.text = banner_label()
        self.text.show()
        layout.addWidget(self.text)
        row = QHBoxLayout()
        row.addStretch(1)
        self.recover_button = QPushButton("Recover what can be read")
        self.recover_button.setToolTip("Copy every chat still readable in the damaged file into your history")
        self.recover_button.clicked.connect(self.recover_requested)
        self.dismiss_button = QPushButton("Dismiss")
        self.dismiss_button.clicked.connect(self.hide)
        row.addWidget(self.recover_button)
        row.addWidget(self.dismiss_button)
        layout.addLayout(row)
        self.hide()

    def show_notice(self, text: str, offer_recovery: bool) -> None:
        self.text.setText(text)
        self.recover_button.setVisible(offer_recovery)
        self.setVisible(bool(text))
