"""The Settings page: appearance and controls, long conversations, privacy, and where files live.

The privacy section says exactly what can connect and when, from the same
text as the first-run dialog and the sidebar badge (:mod:`desktop.privacy`).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
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

from desktop.open_external import open_path
from desktop.privacy import OFFLINE_ENV, offline_forced_by_environment, offline_mode_on, privacy_html
from desktop.widgets.expert import expert_mode
from desktop.widgets.labels import banner_label
from desktop.widgets.scroll_area import scroll_area, transparent_body
from engines.errors import EngineError, ErrorKind
from engines.workspace import Workspace

_THEMES = [("Follow the system", "system"), ("Light", "light"), ("Dark", "dark")]
_OVERFLOW = [
    ("Ask me each time", "ask"),
    ("Drop the oldest turns, with a notice", "drop_oldest"),
    ("Stop with a message", "stop"),
]
_CONTROLS = [("Simple: the settings most people need", False), ("Advanced: every setting", True)]
NO_KEYRING = ("No system keyring is available here, so the token was not saved. Set the HF_TOKEN environment "
              "variable before starting Atelier instead, or install a keyring service (GNOME Keyring, KWallet).")
KEYRING_REFUSED = ("The system keyring did not accept the token (it may be locked), so the token was not saved. "
                   "Unlock it and try again, or set the HF_TOKEN environment variable before starting Atelier.")


def token_failure_message(error: EngineError) -> str:
    """Plain words for a keyring failure, instead of the keyring library's own text."""
    try:
        from keyring.errors import NoKeyringError
    except ImportError:  # no keyring library at all: certainly no keyring
        return NO_KEYRING
    return NO_KEYRING if isinstance(error.__cause__, NoKeyringError) else KEYRING_REFUSED


class SettingsPage(QWidget):
    theme_changed = Signal(str)
    offline_changed = Signal(bool)

    def __init__(self, workspace: Workspace, parent=None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        body = transparent_body("SettingsBody")
        outer.addWidget(scroll_area(body, sideways=True))
        body_layout = QHBoxLayout(body)
        body_layout.setContentsMargins(24, 16, 24, 16)
        column = QWidget()
        column.setMaximumWidth(760)
        body_layout.addWidget(column, 1)
        body_layout.addStretch(0)
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Settings")
        title.setObjectName("PageTitle")
        layout.addWidget(title)
        self.banner = banner_label()
        layout.addWidget(self.banner)

        look = QGroupBox("Appearance")
        look_form = _form(look)
        self.theme = QComboBox()
        for label, value in _THEMES:
            self.theme.addItem(label, value)
        self.theme.setCurrentIndex(self.theme.findData(workspace.settings.theme))
        self.theme.currentIndexChanged.connect(self._theme_changed)
        look_form.addRow("Theme", self.theme)
        self.controls = QComboBox()
        for label, value in _CONTROLS:
            self.controls.addItem(label, value)
        self.controls.setToolTip("Simple hides expert controls (top-k, min-p, seed, threads, GPU layers, sampler, "
                                 "precision, backend…). Nothing changes in how models run.")
        self.controls.setCurrentIndex(self.controls.findData(expert_mode().advanced))
        self.controls.currentIndexChanged.connect(self._controls_changed)
        expert_mode().changed.connect(self._mode_changed)
        look_form.addRow("Controls", self.controls)
        layout.addWidget(look)

        chat = QGroupBox("Chat")
        chat_form = _form(chat)
        self.overflow = QComboBox()
        for label, value in _OVERFLOW:
            self.overflow.addItem(label, value)
        self.overflow.setCurrentIndex(self.overflow.findData(workspace.settings.overflow_policy))
        self.overflow.currentIndexChanged.connect(self._overflow_changed)
        chat_form.addRow("When a chat outgrows the context", self.overflow)
        layout.addWidget(chat)
        from desktop.pages.documents.grounding_settings import GroundingPromptSection

        self.grounding = GroundingPromptSection(workspace, self.show_error)  # what a grounded answer is told
        layout.addWidget(self.grounding)

        network = QGroupBox("Privacy and network")
        network_layout = QVBoxLayout(network)
        self.privacy = QLabel(privacy_html())
        self.privacy.setTextFormat(Qt.RichText)
        self.privacy.setWordWrap(True)
        network_layout.addWidget(self.privacy)
        self.offline = QCheckBox("Offline mode: open no network connection at all (no search, no downloads)")
        self.offline.setChecked(offline_mode_on(workspace.settings))
        if offline_forced_by_environment():
            self.offline.setEnabled(False)
            self.offline.setToolTip(f"{OFFLINE_ENV}=1 is set in the environment: offline mode stays on.")
        self.offline.toggled.connect(self._offline_changed)
        network_layout.addWidget(self.offline)
        token_form = _form(None)
        token_row = QHBoxLayout()
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("hf_…  (only for gated models; kept in the system keyring)")
        self.save_token_button = QPushButton("Save token")
        self.save_token_button.clicked.connect(self._save_token)
        token_row.addWidget(self.token, 1)
        token_row.addWidget(self.save_token_button)
        token_form.addRow("Hugging Face token", token_row)
        network_layout.addLayout(token_form)
        self.network_note = QLabel("")
        self.network_note.setObjectName("Muted")
        self.network_note.setWordWrap(True)
        network_layout.addWidget(self.network_note)
        layout.addWidget(network)
        from desktop.pages.settings_mcp import McpServersSection

        self.mcp_servers = McpServersSection(workspace)  # tool servers a chat can switch on
        layout.addWidget(self.mcp_servers)

        files = QGroupBox("Files")
        files_form = _form(files)
        paths = workspace.paths
        self.folder_buttons: list[QPushButton] = []
        for label, folder in (("Data", paths.data), ("Models", paths.models), ("Logs", paths.logs)):
            button = QPushButton(str(folder))
            button.setToolTip("Open in the file manager")
            button.setStyleSheet("text-align: left; padding-left: 10px;")
            button.clicked.connect(lambda _=False, f=folder: open_path(f, self.show_error))
            files_form.addRow(label, button)
            self.folder_buttons.append(button)
        note = QLabel("Set ATELIER_HOME before starting Atelier to keep everything in one folder (portable installs).")
        note.setObjectName("Muted")
        note.setWordWrap(True)
        files_form.addRow(note)
        layout.addWidget(files)
        layout.addStretch(1)
        self._show_offline_note(self.offline.isChecked())

    def _save(self) -> bool:
        """Write the settings; a file that cannot be written is named in the banner, never a traceback."""
        try:
            self.workspace.save_settings()
        except OSError as exc:
            self.show_error(f"The settings could not be saved: {exc.strerror or exc}. "
                            "The change applies until Atelier closes.")
            return False
        return True

    def show_error(self, message: str) -> None:
        """A warning strip at the top of the page ("" hides it)."""
        self.banner.setText(message)
        self.banner.setVisible(bool(message))

    def _theme_changed(self) -> None:
        self.workspace.settings.theme = self.theme.currentData()
        self._save()
        self.theme_changed.emit(self.workspace.settings.theme)

    def _controls_changed(self) -> None:
        expert_mode().set_advanced(bool(self.controls.currentData()))

    def _mode_changed(self, advanced: bool) -> None:
        """Follow the switch wherever it was flipped (here, or a "Show all settings" link) and remember it."""
        self.controls.blockSignals(True)
        self.controls.setCurrentIndex(self.controls.findData(advanced))
        self.controls.blockSignals(False)
        if self.workspace.settings.advanced_controls != advanced:
            self.workspace.settings.advanced_controls = advanced
            self._save()

    def _offline_changed(self, offline: bool) -> None:
        from engines.network import set_offline  # requests is imported only when needed

        self.workspace.settings.offline = offline
        self._save()
        set_offline(offline)
        self._show_offline_note(offline)
        self.offline_changed.emit(offline)

    def _show_offline_note(self, offline: bool) -> None:
        self.network_note.setText("Offline mode is on: Hugging Face search and downloads are off, "
                                  "and Atelier opens no connection." if offline else "")
        self.network_note.setVisible(offline)

    def _save_token(self) -> None:
        from engines.network import set_hf_token

        token = self.token.text()
        self.token.clear()  # never leave a token in a field that looks saved
        try:
            set_hf_token(token)
        except EngineError as exc:
            self.show_error(token_failure_message(exc) if exc.kind == ErrorKind.UNAVAILABLE else exc.message)
            return
        self.show_error("")
        self.network_note.setText("Token saved in the system keyring." if token.strip()
                                  else "Token forgotten: it was removed from the system keyring.")
        self.network_note.setVisible(True)

    def _overflow_changed(self) -> None:
        self.workspace.settings.overflow_policy = self.overflow.currentData()
        self._save()


def _form(parent) -> QFormLayout:
    form = QFormLayout(parent) if parent is not None else QFormLayout()
    form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
    form.setRowWrapPolicy(QFormLayout.WrapLongRows)
    return form
