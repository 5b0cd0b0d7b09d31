""""Add remote server…": chat with the models of a bigger machine (vLLM, llama-server, Ollama, another Atelier).

The dialog asks for what ``atelier remote add`` takes (a name, the API's
base URL, a key typed in or the name of an environment variable that holds
it, how long to wait for replies) and hands it to the same service,
:func:`engines.remote.manage.add_server`, on a pool thread: the server is
asked what it serves before anything is saved, and a failure (refused,
unknown host, no API at that URL, an untrusted certificate, a key it
wants, offline mode) is shown here in one sentence, with the fields kept
so the user can correct them. Only the check runs on a pool thread; the
server is saved when it answered and the dialog is still open, so
Cancel during a check never adds it anyway. It says plainly that what is sent to a
remote server leaves this computer.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from desktop.widgets.labels import banner_label
from desktop.workers.background import BackgroundTask, run_in_background
from engines.errors import EngineError
from engines.remote.servers import RemoteServers
from engines.remote.spec import DEFAULT_READ_TIMEOUT_S

INTRO = ("Chat with the models of another machine: any server with an OpenAI-compatible API, such as vLLM, "
         "llama.cpp's llama-server, Ollama, LM Studio or another Atelier. Its models appear beside yours as "
         "NAME/MODEL. What you send to them leaves this computer.")


class AddRemoteDialog(QDialog):
    added = Signal(object)  # engines.remote.manage.Added

    def __init__(self, servers: RemoteServers, parent=None) -> None:
        super().__init__(parent)
        self.servers = servers
        self._task: BackgroundTask | None = None
        self.setWindowTitle("Add remote server")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        intro.setObjectName("Muted")
        layout.addWidget(intro)

        form = QFormLayout()
        self.name = QLineEdit()
        self.name.setPlaceholderText("box")
        self.name.setToolTip("A short name: its models are called NAME/MODEL (lower-case letters, digits, . _ -)")
        self.url = QLineEdit()
        self.url.setPlaceholderText("http://box:8000/v1")
        self.url.setToolTip("The API's base URL, as an OpenAI client takes it (it usually ends in /v1)")
        self.key = QLineEdit()
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setPlaceholderText("optional; kept in the system keyring")
        self.key_env = QLineEdit()
        self.key_env.setPlaceholderText("or: the environment variable that holds it, e.g. BOX_KEY")
        self.timeout = QSpinBox()
        self.timeout.setRange(5, 3600)
        self.timeout.setSuffix(" s")
        self.timeout.setValue(int(DEFAULT_READ_TIMEOUT_S))
        self.timeout.setToolTip("How long to wait for the server between two pieces of a reply; "
                                "a server reading a long prompt on a CPU needs longer")
        form.addRow("Name", self.name)
        form.addRow("URL", self.url)
        form.addRow("API key", self.key)
        form.addRow("", self.key_env)
        form.addRow("Wait for replies up to", self.timeout)
        layout.addLayout(form)

        self.message = banner_label()
        layout.addWidget(self.message)
        self.progress = QLabel()
        self.progress.setObjectName("Muted")
        self.progress.setWordWrap(True)
        self.progress.hide()
        layout.addWidget(self.progress)

        buttons = QDialogButtonBox()
        self.add_button = QPushButton("Check and add")
        self.add_button.setObjectName("Primary")
        self.add_button.setDefault(True)
        buttons.addButton(self.add_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.add_button.clicked.connect(self.check_and_add)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def check_and_add(self) -> None:
        """Ask the server what it serves (off the GUI thread), then save it; or say why not."""
        if self._task is not None:
            return
        name, url = self.name.text().strip(), self.url.text().strip()
        key, key_env = self.key.text().strip(), self.key_env.text().strip()
        if not name or not url:
            self._show_error("Give the server a name and its URL (e.g. box and http://box:8000/v1).")
            return
        if key and key_env:
            self._show_error("Give the key one way: typed in, or the name of an environment variable.")
            return
        from engines.remote.manage import check_new_name, check_server

        try:
            check_new_name(self.servers, name)
        except EngineError as exc:
            self._show_error(exc.message)
            return
        timeout = float(self.timeout.value())
        self._busy(True)
        self.progress.setText(f"Asking {url} which models it serves…")
        self.progress.show()
        self._show_error("")
        # Only the check runs on the pool: the server is saved once it answered, if the dialog is still open.
        self._task = run_in_background(
            lambda: check_server(name, url, api_key_env=key_env or None, key=key or None, timeout_s=min(timeout, 60)),
            on_done=lambda listed: self._save(name, url, key, key_env, timeout, listed), on_error=self._failed)

    def _save(self, name: str, url: str, key: str, key_env: str, timeout: float, listed) -> None:
        from engines.remote.manage import add_server

        try:
            added = add_server(self.servers, name, url, api_key_env=key_env or None, key=key or None,
                               timeout_s=timeout, listed=listed)
        except EngineError as exc:
            self._failed(exc)
            return
        self._task = None
        self.key.clear()  # never kept in a widget longer than needed
        self.added.emit(added)
        self.accept()

    def _failed(self, error) -> None:
        from engines.remote.http import KeyRefused

        self._task = None
        self._busy(False)
        self.progress.hide()
        self._show_error(error.message if isinstance(error, EngineError) else str(error))
        if isinstance(error, KeyRefused):
            self.key.setFocus()

    def _busy(self, busy: bool) -> None:
        for widget in (self.name, self.url, self.key, self.key_env, self.timeout, self.add_button):
            widget.setEnabled(not busy)

    def _show_error(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))
        self.adjustSize()  # room for the message (wrapped), never taken from the fields

    def done(self, result: int) -> None:  # noqa: D401 - Qt's name: closing drops a check still running
        if self._task is not None:
            self._task.cancel()
            self._task = None
        super().done(result)
