"""The Settings page: appearance, long conversations, and where files live."""

from __future__ import annotations

import os

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engines.errors import EngineError
from engines.workspace import Workspace

_THEMES = [("Follow the system", "system"), ("Light", "light"), ("Dark", "dark")]
_OVERFLOW = [
    ("Ask me each time", "ask"),
    ("Drop the oldest turns, with a notice", "drop_oldest"),
    ("Stop with a message", "stop"),
]


class SettingsPage(QWidget):
    theme_changed = Signal(str)

    def __init__(self, workspace: Workspace, parent=None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 16, 24, 16)
        column = QWidget()
        column.setMaximumWidth(760)
        outer.addWidget(column)
        outer.addStretch(1)
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Settings")
        title.setObjectName("PageTitle")
        layout.addWidget(title)

        look = QGroupBox("Appearance")
        look_form = QFormLayout(look)
        self.theme = QComboBox()
        for label, value in _THEMES:
            self.theme.addItem(label, value)
        self.theme.setCurrentIndex(self.theme.findData(workspace.settings.theme))
        self.theme.currentIndexChanged.connect(self._theme_changed)
        look_form.addRow("Theme", self.theme)
        layout.addWidget(look)

        chat = QGroupBox("Chat")
        chat_form = QFormLayout(chat)
        self.overflow = QComboBox()
        for label, value in _OVERFLOW:
            self.overflow.addItem(label, value)
        self.overflow.setCurrentIndex(self.overflow.findData(workspace.settings.overflow_policy))
        self.overflow.currentIndexChanged.connect(self._overflow_changed)
        chat_form.addRow("When a chat outgrows the context", self.overflow)
        layout.addWidget(chat)

        network = QGroupBox("Network and privacy")
        network_form = QFormLayout(network)
        self.offline = QCheckBox("Offline mode: Atelier opens no network connection at all")
        env_offline = os.environ.get("ATELIER_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        self.offline.setChecked(workspace.settings.offline or env_offline)
        self.offline.toggled.connect(self._offline_changed)
        network_form.addRow(self.offline)
        token_row = QHBoxLayout()
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("hf_…  (only for gated models; kept in the system keyring)")
        save_token = QPushButton("Save token")
        save_token.clicked.connect(self._save_token)
        token_row.addWidget(self.token, 1)
        token_row.addWidget(save_token)
        network_form.addRow("Hugging Face token", token_row)
        self.network_note = QLabel("")
        self.network_note.setObjectName("Muted")
        self.network_note.setWordWrap(True)
        network_form.addRow(self.network_note)
        layout.addWidget(network)

        files = QGroupBox("Files")
        files_form = QFormLayout(files)
        paths = workspace.paths
        for label, folder in (("Data", paths.data), ("Models", paths.models), ("Logs", paths.logs)):
            button = QPushButton(str(folder))
            button.setToolTip("Open in the file manager")
            button.setStyleSheet("text-align: left; padding-left: 10px;")
            button.clicked.connect(lambda _=False, f=folder: QDesktopServices.openUrl(QUrl.fromLocalFile(str(f))))
            files_form.addRow(label, button)
        note = QLabel("Set ATELIER_HOME before starting Atelier to keep everything in one folder (portable installs).")
        note.setObjectName("Muted")
        note.setWordWrap(True)
        files_form.addRow(note)
        layout.addWidget(files)

    def _theme_changed(self) -> None:
        self.workspace.settings.theme = self.theme.currentData()
        self.workspace.save_settings()
        self.theme_changed.emit(self.workspace.settings.theme)

    def _offline_changed(self, offline: bool) -> None:
        from engines.library.network import set_offline  # requests is imported only when needed

        self.workspace.settings.offline = offline
        self.workspace.save_settings()
        set_offline(offline)
        self.network_note.setText("Offline: catalog downloads and Hub search are off." if offline else "")

    def _save_token(self) -> None:
        from engines.library.network import set_hf_token

        try:
            set_hf_token(self.token.text())
        except EngineError as exc:
            self.network_note.setText(exc.message)
            return
        self.token.clear()
        self.network_note.setText("Token saved in the system keyring (an empty field forgets it).")

    def _overflow_changed(self) -> None:
        self.workspace.settings.overflow_policy = self.overflow.currentData()
        self.workspace.save_settings()
