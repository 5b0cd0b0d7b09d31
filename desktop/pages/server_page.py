"""The Server page: the OpenAI- and Anthropic-compatible API, served from the app to other apps.

What ``atelier serve`` does in a terminal, with a switch: editors, coding
agents, notebooks and scripts on this computer (or, when the user chooses,
the network) use the installed models. The page shows where to connect
(URL and token, with copy buttons; the token hidden until "Show"), what
is loaded, who waits for what, and every request (never its text).

Three promises:

- **One set of models.** The server runs on the window's scheduler, the
  one the chat and images pages use, so a model loaded for chat answers
  the API too, and is never loaded twice.
- **Safe as the CLI.** Loopback by default; every network interface only
  after a question and with the warning ``atelier serve`` prints; the
  token always required (there is no "no token" switch here); CORS off
  until exact origins are named.
- **It stays as the user left it.** The switch, address, port and origins
  are saved (``Settings.server``); the server starts with the app only
  if it was on when the app closed, keeps running while the user chats,
  and stops cleanly when the window closes.

The tables refresh from the scheduler's snapshot once a second, and only
while the page is shown (see desktop/pages/server/tables.py for the cost).
"""

from __future__ import annotations

import re

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.pages.server.activity import ServerActivity
from desktop.pages.server.connect_tab import ConnectTab
from desktop.pages.server.running import Binding, ServerRunner
from desktop.privacy import offline_mode_on
from desktop.widgets.expert import mark_advanced
from desktop.widgets.labels import banner_label
from engines.errors import EngineError
from engines.workspace import Workspace

HOSTS = [("This computer only (127.0.0.1)", "127.0.0.1"), ("Every network interface (0.0.0.0)", "0.0.0.0")]
REFRESH_MS = 1000
ASK_NETWORK = ("Listen on every network interface?\n\nEvery machine that can reach this one can then use your "
               "models with the API token. Keep the token secret, and prefer \"This computer only\" unless another "
               "machine needs the models.")
STARTING, RUNNING, STOPPING, STOPPED = "starting", "running", "stopping", "stopped"
_UNSET = object()


def parse_origins(text: str) -> tuple[tuple[str, ...], str | None]:
    """The origins typed in the page (commas or spaces between them), and why they cannot be used, or None."""
    from engines.server.config import cors_origin_problem  # engines.server: only when asked (see running.py)

    origins = tuple(dict.fromkeys(part for part in re.split(r"[\s,]+", text.strip()) if part))
    for origin in origins:
        if "*" in origin:
            return origins, ("A wildcard would let any web page use the API: name each web page's origin exactly, "
                             "e.g. http://localhost:3000.")
        problem = cors_origin_problem(origin)
        if problem:
            return origins, problem[:1].upper() + problem[1:] + "."
    return origins, None


class ServerPage(QWidget):
    running_changed = Signal(bool)

    def __init__(self, workspace: Workspace, scheduler, parent=None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.scheduler = scheduler
        self.runner = ServerRunner(workspace, scheduler, self)
        self.runner.started.connect(self._started)
        self.runner.stopped.connect(self._stopped)
        self.runner.failed.connect(self._failed)
        self.state = STOPPED
        self._token: str | None = None
        self._token_source = ""
        self._token_error: str | None = None
        self._user_started = False  # the switch was pressed (not the start with the app)
        self._chat_model_id = _UNSET  # the chat page's model, once the window says (set_chat_model)
        prefs = workspace.settings.server

        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 16, 24, 16)
        layout.setSpacing(10)
        header = QHBoxLayout()
        title = QLabel("Server")
        title.setObjectName("PageTitle")
        header.addWidget(title)
        header.addStretch(1)
        self.status = QLabel("Off")
        self.status.setObjectName("StatusLine")
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        header.addWidget(self.status)
        self.switch = QPushButton("Start server")
        self.switch.setObjectName("Primary")
        self.switch.setCheckable(True)
        self.switch.setToolTip("Serve the installed models over OpenAI's and Anthropic's APIs")
        self.switch.clicked.connect(self._switch_clicked)
        header.addWidget(self.switch)
        layout.addLayout(header)
        intro = QLabel("Editors, coding agents, notebooks and scripts that speak OpenAI's or Anthropic's API can use "
                       "your models. The server shares the models the app has loaded and keeps running while you chat.")
        intro.setObjectName("Muted")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.banner = banner_label()
        layout.addWidget(self.banner)
        self.network_banner = banner_label("Banner")
        layout.addWidget(self.network_banner)

        connection = QGroupBox("Connection")
        form = QFormLayout(connection)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self.url = QLineEdit()
        self.url.setReadOnly(True)
        self.copy_url_button = QPushButton("Copy")
        self.copy_url_button.setToolTip("Copy the base URL (what an OpenAI client takes as base_url)")
        self.copy_url_button.clicked.connect(lambda: self._copy(self.url.text(), "The URL was copied."))
        form.addRow("URL", _row(self.url, self.copy_url_button))
        self.token = QLineEdit()
        self.token.setReadOnly(True)
        self.token.setEchoMode(QLineEdit.Password)
        self.show_token_button = QPushButton("Show")
        self.show_token_button.setCheckable(True)
        self.show_token_button.toggled.connect(self._show_token)
        self.copy_token_button = QPushButton("Copy")
        self.copy_token_button.setToolTip("Copy the API token (what a client sends as its API key)")
        self.copy_token_button.clicked.connect(lambda: self._copy(self._token or "", "The token was copied."))
        self.regenerate_button = QPushButton("Regenerate…")
        self.regenerate_button.clicked.connect(self.regenerate_token)
        form.addRow("API token", _row(self.token, self.show_token_button, self.copy_token_button,
                                      self.regenerate_button))
        self.token_note = _note_label()
        form.addRow("", self.token_note)
        self.host = QComboBox()
        for label, value in HOSTS:
            self.host.addItem(label, value)
        self.host.setCurrentIndex(max(0, self.host.findData(prefs.host)))
        self.host.currentIndexChanged.connect(self._host_changed)
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(prefs.port)
        self.port.setToolTip("atelier serve uses 8080 by default; choose another to run both")
        self.port.valueChanged.connect(lambda _port: self._show_state(self.state))  # the URL and snippets follow
        self.port.editingFinished.connect(self._save_prefs)
        listen = _row(self.host, QLabel("Port"), self.port)
        form.addRow("Listen on", listen)
        self.origins = QLineEdit(", ".join(prefs.cors_origins))
        self.origins.setPlaceholderText("None: web pages cannot call the API (e.g. http://localhost:3000)")
        self.origins.setToolTip("Web pages from these exact origins may call the API from a browser; "
                                "separate them with commas")
        self.origins.editingFinished.connect(self._origins_edited)
        form.addRow("Web pages allowed", self.origins)
        mark_advanced(self.origins)
        self.note = _note_label()
        form.addRow("", self.note)
        layout.addWidget(connection)
        self.notice = _note_label()  # what a button just did ("The URL was copied."), until the next one
        layout.addWidget(self.notice)

        self.activity = ServerActivity(scheduler, self._log_entries, self._model_name, self._set_note, self)
        self.connect_tab = ConnectTab(self._copy)
        self.activity.addTab(self.connect_tab, "How to connect")
        layout.addWidget(self.activity, 1)

        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._show_network_warning()
        self._show_state(STOPPED)
        if prefs.enabled:  # it was on when the app closed: on again, once the window is up
            QTimer.singleShot(0, self._start_with_app)

    # ---- the switch ---------------------------------------------------------------------

    def _switch_clicked(self, checked: bool) -> None:
        if checked:
            self.start()
        else:
            self.stop()

    def _start_with_app(self) -> None:
        if self.state == STOPPED:
            self.start(by_user=False)

    def start(self, by_user: bool = True) -> None:
        """Start serving with the page's settings (off the GUI thread); a problem is said in the banner."""
        if self.state != STOPPED:
            return
        self._show_error("")
        binding = self._binding()
        token = self._ensure_token()
        if binding is None or token is None:
            if token is None:
                self._show_error(self._token_error or "")
            self._show_state(STOPPED)
            return
        self._user_started = by_user
        self._save_prefs(enabled=True if by_user else None)
        self._show_state(STARTING)
        self.runner.start(binding, token)

    def stop(self) -> None:
        """Stop serving: the API's requests in progress are cancelled; the models stay loaded for the app."""
        if self.state not in (RUNNING, STARTING):
            return
        self._save_prefs(enabled=False)
        self._show_state(STOPPING)
        self.runner.stop()

    def _started(self, url: str) -> None:
        self._show_state(RUNNING)
        self.running_changed.emit(True)
        self.refresh()

    def _stopped(self) -> None:
        if self.runner.busy:  # a restart: the start follows
            return
        self._show_state(STOPPED)
        self.running_changed.emit(False)
        self.refresh()

    def _failed(self, message: str) -> None:
        self._show_state(STOPPED)
        if self._user_started:  # the switch shows off, so the app will not start it next time either
            self._save_prefs(enabled=False)
            self._show_error(message)
        else:
            self._show_error(f"The server was on when Atelier last closed, but it did not start again. {message}")
        self.running_changed.emit(False)

    def _show_state(self, state: str) -> None:
        self.state = state
        on = state in (STARTING, RUNNING)
        self.switch.setChecked(on)
        self.switch.setText("Stop server" if on else "Start server")
        self.switch.setObjectName("" if on else "Primary")
        self.switch.style().unpolish(self.switch)
        self.switch.style().polish(self.switch)
        self.switch.setEnabled(state in (RUNNING, STOPPED))
        server = self.runner.server
        url = server.url if state == RUNNING and server is not None else self._planned_url()
        self.status.setText({STARTING: "Starting…", RUNNING: f"On at {url}", STOPPING: "Stopping…",
                             STOPPED: "Off"}[state])
        self.url.setText(url)
        editable = state == STOPPED
        for widget in (self.host, self.port, self.origins):
            widget.setEnabled(editable)
        self.regenerate_button.setEnabled(state in (RUNNING, STOPPED) and self._token is not None
                                          and not self._token_source.startswith("$"))
        self.note.setText("" if editable else "Stop the server to change where it listens or which web pages "
                          "may call it.")
        self._show_snippets()

    # ---- the token ------------------------------------------------------------------------

    def _ensure_token(self) -> str | None:
        """The API token (``atelier serve``'s: from $ATELIER_API_KEY, else the generated one), read once."""
        if self._token is None and self._token_error is None:
            from engines.server.token import api_token

            try:
                self._token, self._token_source = api_token(self.workspace.paths.config)
            except EngineError as exc:
                self._token_error = f"The API token cannot be used: {exc.message.rstrip('.')}."
            self._show_token(self.show_token_button.isChecked())
        return self._token

    def _show_token(self, shown: bool) -> None:
        self.show_token_button.setText("Hide" if shown else "Show")
        self.token.setEchoMode(QLineEdit.Normal if shown else QLineEdit.Password)
        self.token.setText(self._token or "")
        from_env = self._token_source.startswith("$")
        self.regenerate_button.setEnabled(self.state in (RUNNING, STOPPED) and self._token is not None and not from_env)
        if self._token_error:
            self.token_note.setText(self._token_error)
        elif from_env:
            self.token_note.setText(f"From {self._token_source}, set where Atelier was started; it wins over the "
                                    "saved token, so it cannot be regenerated here.")
        elif self._token_source:
            self.token_note.setText(f"Kept in {self._token_source}, readable by you only; 'atelier serve' uses "
                                    "the same token.")
        self.token_note.setToolTip(self.token_note.text())  # whole, where a narrow window cuts it
        self._show_snippets()

    def regenerate_token(self) -> None:
        """A new token after a question; a running server restarts to use it (clients then need the new one)."""
        from engines.server.token import regenerate_token

        running = self.state == RUNNING
        question = ("Make a new API token?\n\nApps that use the current token are refused until they are given the "
                    "new one." + (" The server restarts to use it: requests in progress are stopped." if running
                                   else ""))
        if QMessageBox.question(self, "Regenerate the API token", question) != QMessageBox.Yes:
            return
        try:
            self._token = regenerate_token(self.workspace.paths.config)
        except OSError as exc:
            self._show_error(f"The new token could not be saved: {exc.strerror or exc}. The current token stays.")
            return
        self._show_token(self.show_token_button.isChecked())
        self._set_note("A new token was made" + (": the server restarts with it." if running else "."))
        binding = self._binding()
        if running and binding is not None:
            self._show_state(STARTING)
            self.runner.restart(binding, self._token)

    # ---- where it listens --------------------------------------------------------------------

    def _host_changed(self) -> None:
        if self.host.currentData() == "0.0.0.0" and QMessageBox.question(
                self, "Listen on the network", ASK_NETWORK) != QMessageBox.Yes:
            self.host.blockSignals(True)
            self.host.setCurrentIndex(self.host.findData("127.0.0.1"))
            self.host.blockSignals(False)
        self._show_network_warning()
        self._save_prefs()
        self._show_state(self.state)  # the URL follows

    def _show_network_warning(self) -> None:
        host = self.host.currentData()
        if host == "0.0.0.0":
            from engines.server.config import network_warning

            warning = network_warning(host)
            self.network_banner.setText(f"{warning[:1].upper()}{warning[1:]}. The token is always required.")
        self.network_banner.setVisible(host == "0.0.0.0")

    def _origins_edited(self) -> None:
        _origins, problem = parse_origins(self.origins.text())
        self._show_error(problem or "")
        if problem is None:
            self._save_prefs()

    def _binding(self) -> Binding | None:
        """Where to listen, as the page shows it; None (said in the banner) when the origins are not usable."""
        origins, problem = parse_origins(self.origins.text())
        if problem:
            self._show_error(problem)
            return None
        return Binding(self.host.currentData(), self.port.value(), origins)

    def _planned_url(self) -> str:
        host = "127.0.0.1"  # a wildcard bind is reached on this machine through loopback, as ApiServer.url says
        return f"http://{host}:{self.port.value()}/v1"

    def _save_prefs(self, enabled: bool | None = None) -> None:
        """Remember the page's choices (and the switch, when given); a settings file that cannot be written is said."""
        prefs = self.workspace.settings.server
        origins, problem = parse_origins(self.origins.text())
        prefs.host = self.host.currentData()
        prefs.port = self.port.value()
        if problem is None:
            prefs.cors_origins = list(origins)
        if enabled is not None:
            prefs.enabled = enabled
        try:
            self.workspace.save_settings()
        except OSError as exc:
            self._show_error(f"The server settings could not be saved: {exc.strerror or exc}. They apply until "
                             "Atelier closes.")

    # ---- the live tables -----------------------------------------------------------------

    def refresh(self) -> None:
        """Read the scheduler's snapshot and the request log into the tables (cheap: see tables.py)."""
        self.activity.refresh()
        if self.state == RUNNING and not self.runner.running and not self.runner.busy:
            self._show_state(STOPPED)  # uvicorn's thread ended on its own: said, never a stale "On"
            self._show_error("The server stopped unexpectedly; the details are in the log folder's files. "
                             "Start it again with the switch.")
            self.running_changed.emit(False)

    def _log_entries(self) -> list:
        return self.runner.log.entries() if self.runner.log is not None else []

    def _model_name(self, engine: str, spec) -> str:
        """How the app names a loaded model: the installed id (or NAME/MODEL on a remote server)."""
        if engine == "remote":
            return spec.model_id
        path = getattr(spec, "model_path", None)
        model = self.workspace.models.find_by_path(path) if path else None
        return model.id if model is not None else str(getattr(spec, "model_path", spec))

    # ---- how to connect ---------------------------------------------------------------------

    def set_chat_model(self, model) -> None:
        """The chat page shows ``model`` (installed, remote, or None): the examples name it when the server serves
        it (the window tells the page; a page alone goes by the saved choice)."""
        self._chat_model_id = model.id if model is not None else None
        if self.isVisible():
            self._show_snippets()

    def _snippet_model(self) -> tuple[str, str]:
        """The model the examples name, and which one that is, in a sentence: the chat page's model when the
        server serves it, else the first chat model on this computer."""
        models = self.workspace.models
        chosen_id = self._chat_model_id if self._chat_model_id is not _UNSET else self.workspace.settings.last_model_id
        chosen = models.get(chosen_id or "")
        if chosen is not None and chosen.kind == "chat" and chosen.engine:
            return chosen.id, f"The examples use {chosen.id}, the chat page's model."
        remote, blocked = self._served_remote(chosen_id) if chosen is None and chosen_id else (None, "")
        if remote is not None:
            return remote.id, (f"The examples use {remote.id}, the chat page's model: it runs on the remote server "
                               f"'{remote.server.name}' ({remote.server.base_url}), and the server passes what "
                               "they send on to it.")
        first = next(iter(models.runnable("chat")), None)
        if first is None:
            return "MODEL", ("No chat model is installed here: put a model's id in place of MODEL "
                             "('atelier models list' lists them).")
        why = f": the chat page's model, {chosen_id}, {blocked}" if blocked else ""
        return first.id, f"The examples use {first.id}, the first chat model on this computer{why}."

    def _served_remote(self, model_id: str):
        """(the remote model ``model_id`` names, if this server serves it; else None and why not, or "")."""
        from engines.remote import RemoteServers, find_remote_model
        from engines.remote.urls import is_loopback

        remote = find_remote_model(model_id, RemoteServers.beside(self.workspace.models.file))
        if remote is None:
            return None, ""
        if offline_mode_on(self.workspace.settings) and not is_loopback(remote.server.base_url):
            return None, (f"runs on the remote server '{remote.server.name}', which offline mode keeps out of "
                          "reach")
        return remote, ""

    def _show_snippets(self) -> None:
        if hasattr(self, "connect_tab"):
            model, note = self._snippet_model()
            self.connect_tab.fill(self.url.text(), self._token, model, self.show_token_button.isChecked(), note)

    # ---- small things ---------------------------------------------------------------------------

    def _copy(self, text: str, done: str) -> None:
        if text:
            QGuiApplication.clipboard().setText(text)
            self._set_note(done)

    def _set_note(self, text: str) -> None:
        self.notice.setText(text)

    def _show_error(self, message: str) -> None:
        self.banner.setText(message)
        self.banner.setVisible(bool(message))

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        self._ensure_token()
        self._show_snippets()  # the chat page's model may have changed since
        self.refresh()
        self._timer.start()

    def hideEvent(self, event) -> None:  # noqa: N802
        self._timer.stop()  # nobody looks: no refresh
        super().hideEvent(event)

    def shutdown(self) -> None:
        """The window closes: stop the server cleanly (its switch setting stays as the user left it)."""
        self._timer.stop()
        self.runner.shutdown()


def _row(*widgets) -> QHBoxLayout:
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    for index, widget in enumerate(widgets):
        row.addWidget(widget, 1 if index == 0 else 0)
    return row


def _note_label() -> QLabel:
    """A one-line muted note. Not word-wrapped: a wrapped label in a form is given room for three lines and
    leaves gaps around its one; a line too long for a narrow window is cut, and the tooltip has it whole."""
    label = QLabel()
    label.setObjectName("Muted")
    label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
    return label
