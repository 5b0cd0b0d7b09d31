"""Tools and "Reply as JSON" in the chat page: the panel's Tools box, and what one turn is given.

:class:`ToolsBox` sits in the chat's right-hand panel, below the system
prompt: the enabled MCP servers (``mcp-servers.json``, see
:mod:`engines.tools.servers`), each with a switch for this chat and the
tools it listed, the tool-call mode in words (the loaded model's own tool
format, ``engines.tools.call_formats.mode_name``, or
``engines.tools.fallback.FALLBACK_NAME``), "The first step must call a
tool" (``atelier chat --tool-choice required``), and "Reply as JSON
matching this schema" (typed or loaded from a file; not together with
tools, as on the command line: a reply that calls tools is not one JSON
answer).

:class:`ChatTools` wires it to the page. What a chat switched on is saved
with ``engines.chat.tool_log.set_chat_tools`` the moment it changes (a new
chat keeps it until its first message creates it) and is shown again when
the chat is reopened. When a turn starts (``streaming_changed(True)``,
emitted before the worker is asked) the choice is taken as a snapshot on
the GUI thread; the worker then calls :meth:`ChatTools.open_turn` on its
own thread, which starts the servers (``ToolSet.open``: one that fails is a
line in the banner, the reply goes on without it) and hands the turn its
``ToolSet``, the chat's ``Approvals`` (the dialog, through
:class:`desktop.chat.tool_approval.ApprovalBridge`) and the schema.
Each ``ToolCallEvent`` / ``ToolProgressEvent`` redraws the streaming reply
with its calls; a finished reply's calls are read from the history
(``calls_in``). Stop refuses a call waiting for approval and ends the turn
before its next step (:class:`_StoppableHost`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.chat.tool_calls import CallDisplay, display_of
from desktop.chat.tool_approval import ApprovalBridge
from engines.errors import EngineError, ErrorKind

NO_SERVERS = "No tool servers yet: add one in Settings → MCP servers."
JSON_WITH_TOOLS = ("Reply as JSON cannot be combined with tools: a reply that calls tools is not one JSON answer. "
                   "Switch the tools or Reply as JSON off for this message.")
SCHEMA_PLACEHOLDER = '{"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}'


def schema_problem(text: str) -> tuple[dict | None, str | None]:
    """(the schema, None), or (None, why it cannot constrain a reply), in the engine's words where it has them.

    The same checks as the engine's grammar path (engines.llama.grammar) short of the model's vocabulary:
    JSON, an object, the keywords a grammar cannot enforce, and llama.cpp's converter itself.
    """
    try:
        schema = json.loads(text)
    except ValueError as exc:
        return None, f"The reply schema is not JSON: {exc}."
    if not isinstance(schema, dict):
        return None, f"The reply schema must be a JSON object (a schema), not {type(schema).__name__}."
    from engines.llama.grammar import check_schema

    try:
        check_schema(schema)
    except EngineError as exc:
        return None, exc.message
    return schema, None


class ToolsBox(QGroupBox):
    """The Tools section of the chat panel. ``changed`` when the user switches a server or edits the schema."""

    changed = Signal()
    shown = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Tools (this chat)", parent)
        self.setObjectName("ToolsBox")
        self._updating = False
        layout = QVBoxLayout(self)
        self.mode = QLabel()
        self.mode.setObjectName("Muted")
        self.mode.setWordWrap(True)
        layout.addWidget(self.mode)
        self.servers_area = QVBoxLayout()
        self.servers_area.setSpacing(2)
        layout.addLayout(self.servers_area)
        self.switches: dict[str, QCheckBox] = {}
        self.empty = QLabel(NO_SERVERS)
        self.empty.setObjectName("Muted")
        self.empty.setWordWrap(True)
        layout.addWidget(self.empty)
        self.required = QCheckBox("The first step must call a tool")
        self.required.setToolTip("Tool choice 'required' (atelier chat --tool-choice required): the model's first "
                                 "step is held to a tool call; after the results it answers as it likes.")
        layout.addWidget(self.required)
        self.json_switch = QCheckBox("Reply as JSON matching this schema")
        self.json_switch.setToolTip("The reply is constrained token by token to the schema (a llama.cpp grammar). "
                                    "Not together with tools: a reply that calls tools is not one JSON answer.")
        layout.addWidget(self.json_switch)
        self.schema = QPlainTextEdit()
        self.schema.setPlaceholderText(SCHEMA_PLACEHOLDER)
        self.schema.setFixedHeight(90)
        layout.addWidget(self.schema)
        row = QHBoxLayout()
        self.load_button = QPushButton("Load schema file…")
        row.addWidget(self.load_button)
        row.addStretch(1)
        layout.addLayout(row)
        self.problem = QLabel()
        self.problem.setObjectName("Error")
        self.problem.setWordWrap(True)
        self.problem.hide()
        layout.addWidget(self.problem)
        self.json_switch.toggled.connect(self._json_toggled)
        self.schema.textChanged.connect(self._emit)
        self.load_button.clicked.connect(self._load_file)
        self._json_toggled(False)

    def set_mode(self, text: str) -> None:
        self.mode.setText(text)

    def set_servers(self, servers, chosen: list[str], builtin: str | None = None) -> None:
        """The enabled servers, each a switch with its tools listed under it; ``chosen`` are on.

        ``builtin``: the line under Atelier's own image tool, when it is offered (a switch named ``atelier``).
        """
        self._updating = True
        while self.servers_area.count():
            item = self.servers_area.takeAt(0)
            if item.widget() is not None:
                item.widget().hide()  # until its deferred delete runs, it must not paint over the new rows
                item.widget().deleteLater()
        self.switches = {}
        for server in servers:
            switch = QCheckBox(server.name)
            switch.setToolTip(server.where)
            switch.setChecked(server.name in chosen)
            switch.toggled.connect(self._emit)
            self.servers_area.addWidget(switch)
            tools = ", ".join(tool.name for tool in server.tools) or "no tools listed (refresh it in Settings)"
            listed = QLabel(tools)
            listed.setObjectName("Muted")
            listed.setWordWrap(True)
            listed.setContentsMargins(22, 0, 0, 4)
            listed.setToolTip("\n".join(f"{t.name}: {t.description.strip()}" for t in server.tools))
            self.servers_area.addWidget(listed)
            self.switches[server.name] = switch
        if builtin is not None:
            from engines.tools.servers import BUILTIN_SERVER

            switch = QCheckBox("Atelier's image engine")
            switch.setToolTip("make_image: the model may make a gallery image, with the Images page's model and "
                              "settings; you allow each call as for any tool.")
            switch.setChecked(BUILTIN_SERVER in chosen)
            switch.toggled.connect(self._emit)
            self.servers_area.addWidget(switch)
            listed = QLabel(builtin)
            listed.setObjectName("Muted")
            listed.setWordWrap(True)
            listed.setContentsMargins(22, 0, 0, 4)
            self.servers_area.addWidget(listed)
            self.switches[BUILTIN_SERVER] = switch
        self.empty.setVisible(not servers)
        self._updating = False

    def chosen(self) -> list[str]:
        return [name for name, switch in self.switches.items() if switch.isChecked()]

    def set_schema(self, schema: dict | None) -> None:
        self._updating = True
        self.json_switch.setChecked(schema is not None)
        self.schema.setPlainText(json.dumps(schema, indent=2, ensure_ascii=False) if schema is not None else "")
        self._json_toggled(schema is not None)
        self.show_problem("")
        self._updating = False

    def show_problem(self, text: str) -> None:
        self.problem.setText(text)
        self.problem.setVisible(bool(text))

    def _json_toggled(self, on: bool) -> None:
        self.schema.setEnabled(on)
        self.load_button.setEnabled(on)
        if not on:
            self.show_problem("")
        self._emit()

    def _emit(self, *_args) -> None:
        if not self._updating:
            self.changed.emit()

    def _load_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a JSON schema", str(Path.home()),
                                              "JSON schema (*.json);;All files (*)")
        if path:
            self.load_schema_file(path)

    def load_schema_file(self, path: str) -> None:
        try:
            text = Path(path).read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            self.show_problem(f"{Path(path).name} could not be read: {getattr(exc, 'strerror', None) or exc}")
            return
        self.schema.setPlainText(text)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().showEvent(event)
        self.shown.emit()


class _StoppableHost:
    """The worker's host for one tool turn: after Stop, the next step is not started (the turn ends cancelled)."""

    def __init__(self, host, stopped: threading.Event) -> None:
        self._host, self._stopped = host, stopped

    def load(self, *args, **kwargs):
        return self._host.load(*args, **kwargs)

    def generate(self, request):
        if self._stopped.is_set():
            raise EngineError(ErrorKind.CANCELLED, "Stopped.")
        return self._host.generate(request)

    def __getattr__(self, name):
        return getattr(self._host, name)


class TurnTools:
    """What one turn runs with (made on the worker's thread); ``close()`` stops its servers."""

    def __init__(self, toolset, approvals, json_schema: dict | None, stopped: threading.Event,
                 tool_choice: str = "auto") -> None:
        self.toolset, self.approvals, self.json_schema, self.stopped = toolset, approvals, json_schema, stopped
        self.tool_choice = tool_choice

    def host(self, host):
        return _StoppableHost(host, self.stopped) if self.toolset else host

    def turn_args(self) -> dict:
        return {"tools": self.toolset or None, "approvals": self.approvals, "json_schema": self.json_schema,
                "tool_choice": self.tool_choice}

    def close(self) -> None:
        if self.toolset is not None:
            self.toolset.close()


class ChatTools(QObject):
    """The chat page's tools: the panel's box, the snapshot a turn takes, live and saved calls."""

    problem = Signal(str)  # a server could not start: one line for the banner (emitted on the worker's thread)

    def __init__(self, page) -> None:
        super().__init__(page)
        from engines.tools.fallback import FALLBACK_NAME
        from engines.tools.servers import ToolServers

        self.page = page
        self.controller = page.controller
        self.servers = ToolServers.beside(self.controller.workspace.models.file)
        self.bridge = ApprovalBridge(page)
        self._approvals: dict[int, object] = {}  # per chat: "Always allow" lasts while Atelier is open
        self._loaded_for: int | None = -1  # the chat whose choice the box shows
        self._snapshot: tuple | None = None  # (servers, approvals, schema) for the turn about to run
        self._stopped = threading.Event()
        self.live: dict[str, object] = {}  # call id -> the streaming reply's ToolCall
        self.progress: dict[str, str] = {}
        self.expanded: set[str] = set()
        self.box = ToolsBox()
        self.box.set_mode(f"Mode: {FALLBACK_NAME}.")
        panel_layout = page.panel.widget().layout()
        panel_layout.insertWidget(max(0, panel_layout.indexOf(page.panel.hidden_note)), self.box)
        self.box.changed.connect(self._box_changed)
        page.controller.model_info.connect(self._model_loaded)
        self.box.shown.connect(self.refresh_servers)
        self.problem.connect(self._show_problem)
        c = self.controller
        c.streaming_changed.connect(self._streaming_changed)
        c.messages_changed.connect(self._chat_shown)
        c.worker.tools_for = self
        c.worker.tool_event.connect(self._tool_event)
        page.view.call_toggled.connect(self._toggle)
        self.refresh_servers()

    # ---- the box ---------------------------------------------------------

    @Slot(object)
    def _model_loaded(self, info) -> None:
        """Name the mode the loaded model's calls use: its template's own tool format, else the JSON fallback."""
        from engines.tools.call_formats import mode_name
        from engines.tools.fallback import FALLBACK_NAME

        self.box.set_mode(f"Mode: {mode_name(getattr(info, 'tool_format', None)) or FALLBACK_NAME}.")

    def _enabled(self) -> list:
        """The enabled servers; none (and the reason under the box) when the list cannot be read."""
        try:
            return [s for s in self.servers.all() if s.enabled]
        except EngineError as exc:
            self.box.show_problem(exc.message)
            return []

    def refresh_servers(self) -> None:
        """Show the enabled servers again (Settings may have changed them), keeping the chat's switches."""
        enabled = self._enabled()
        chosen = self.box.chosen() if self._loaded_for != -1 else []
        self.box.set_servers(enabled, chosen, self.image_tool_line())

    def image_tool_line(self) -> str | None:
        """What the image tool's switch says under it; None when this Atelier has no image tool."""
        import importlib.util

        if importlib.util.find_spec("engines.images.image_tool") is None:
            return None
        model_id = self.controller.workspace.settings.images.model_id
        model = self.controller.workspace.models.get(model_id) if model_id else None
        if model is None:
            return "make_image: pick an image model on the Images page first"
        return f"make_image, with {model.name} (the Images page's model and settings)"

    def _image_tool(self):
        """(ImageLoadSpec, model id) of the Images page's model for the image tool; EngineError in words."""
        from engines.diffusion.types import ImageLoadSpec
        from engines.library.resolve import resolve_model

        prefs = self.controller.workspace.settings.images
        if not prefs.model_id:
            raise EngineError(ErrorKind.BAD_INPUT, "no image model is chosen on the Images page yet; pick one there.")
        found = resolve_model(prefs.model_id, self.controller.workspace.models, kind="image")
        return ImageLoadSpec(str(found.local_path()), backend=prefs.backend), (
            found.installed.id if found.installed is not None else None)

    def _chat_shown(self, conversation_id: int) -> None:
        current = self.controller.current_id or 0
        if conversation_id != current or current == self._loaded_for:
            return
        self._loaded_for = current
        servers, schema = [], None
        if current:
            try:
                from engines.chat.tool_log import chat_tools

                servers, schema = chat_tools(self.controller.store, current)
            except Exception:  # noqa: BLE001 - a chat whose tools cannot be read shows none; the page shows the error
                servers, schema = [], None
        self.box.set_servers(self._enabled(), servers, self.image_tool_line())
        self.box.set_schema(schema)
        self.expanded.clear()

    def _box_changed(self) -> None:
        self.box.show_problem("")
        self._save(self.controller.current_id)

    def _save(self, conversation_id: int | None) -> None:
        if not conversation_id:
            return
        from engines.chat.errors import ChatStoreError
        from engines.chat.tool_log import set_chat_tools

        schema = None
        if self.box.json_switch.isChecked():
            schema, _problem = schema_problem_quick(self.box.schema.toPlainText())
        try:
            set_chat_tools(self.controller.store, conversation_id, self.box.chosen(), schema)
        except ChatStoreError as exc:
            self.page._show_banner(f"The chat's tools could not be saved: {exc}")

    def check_before_send(self) -> bool:
        """False (with the reason under the schema) when "Reply as JSON" is on and its schema cannot be used."""
        if not self.box.json_switch.isChecked():
            return True
        if self.box.chosen():
            problem = JSON_WITH_TOOLS
            self.box.show_problem(problem)
            self.page._show_banner(problem)
            return False
        _schema, problem = schema_problem(self.box.schema.toPlainText())
        self.box.show_problem(problem or "")
        if problem:
            self.page._show_banner(problem)
        return problem is None

    # ---- a turn --------------------------------------------------------------

    def _streaming_changed(self, streaming: bool) -> None:
        if not streaming:
            self.live.clear()
            self.progress.clear()
            return
        conversation_id = self.controller.current_id or 0
        self._loaded_for = conversation_id  # a chat created by this message keeps what the box shows
        self._save(conversation_id)
        from engines.tools.loop import Approvals

        from engines.tools.servers import BUILTIN_SERVER

        chosen = set(self.box.chosen())
        servers = [s for s in self._enabled() if s.name in chosen]
        image = None
        if BUILTIN_SERVER in chosen and BUILTIN_SERVER in self.box.switches:
            # the window's one scheduler (a chat model and an image model take turns on a small machine)
            scheduler = getattr(self.page.window(), "scheduler", None) or \
                getattr(self.controller.worker.host, "_scheduler", None)
            try:
                if scheduler is None:
                    raise EngineError(ErrorKind.INTERNAL, "this chat does not run on the app's scheduler.")
                image = (*self._image_tool(), scheduler)
            except EngineError as exc:
                self._show_problem(f"The image tool is not offered: {exc.message}")
        schema = None
        if self.box.json_switch.isChecked():
            schema, _problem = schema_problem_quick(self.box.schema.toPlainText())
        approvals = self._approvals.get(conversation_id)
        if approvals is None:
            approvals = self._approvals[conversation_id] = Approvals(self.bridge.ask)
        self._stopped = threading.Event()
        self.bridge.start_turn()
        self.live.clear()
        self.progress.clear()
        self._snapshot = (servers, image, approvals, schema, self._stopped,
                          "required" if self.box.required.isChecked() else "auto")

    def open_turn(self, conversation_id: int) -> TurnTools | None:
        """On the worker's thread: start the chosen servers; None when the chat uses no tools and no schema."""
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is None:
            return None
        servers, image, approvals, schema, stopped, tool_choice = snapshot
        if not servers and image is None and schema is None:
            return None
        toolset = None
        if servers or image is not None:
            from engines.tools.toolset import ToolSet

            if servers:
                names = ", ".join(server.name for server in servers)
                self.controller.worker.progress.emit(f"Starting the tool server{'s' if len(servers) > 1 else ''} "
                                                     f"{names}…")
            toolset = ToolSet.open(servers)
            for line in toolset.problems:
                self.problem.emit(line)
            if image is not None:
                self._add_image_tool(toolset, *image)
            if not toolset:
                toolset.close()
                toolset = None
        return TurnTools(toolset, approvals, schema if toolset is None else None, stopped,
                         tool_choice if toolset is not None else "auto")

    def _add_image_tool(self, toolset, spec, model_id, scheduler) -> None:
        """Atelier's image engine as ``make_image``, on the window's scheduler."""
        from engines.images.image_tool import add_image_tool

        workspace = self.controller.workspace
        add_image_tool(toolset, scheduler.host_for("chat image tool"), workspace.paths, workspace.settings.images,
                       spec, model_id)

    def cancel(self) -> None:
        """Stop (GUI thread): refuse a call waiting for approval, and start no further step."""
        self._stopped.set()
        self.bridge.cancel()

    @Slot(str)
    def _show_problem(self, line: str) -> None:
        self.page._show_banner(f"{line} The reply goes on without it.")

    # ---- calls in the transcript ---------------------------------------------

    @Slot(int, object)
    def _tool_event(self, conversation_id: int, event) -> None:
        from engines.tools.loop import ToolCallEvent, ToolProgressEvent

        if isinstance(event, ToolCallEvent):
            self.live[event.call.call_id] = event.call
        elif isinstance(event, ToolProgressEvent):
            total = f" / {event.total:g}" if event.total else ""
            self.progress[event.call_id] = f"{event.progress:g}{total}" + (f" {event.message}" if event.message else "")
        else:
            return
        c = self.controller
        if conversation_id == c.current_id and c.streaming:
            self.page._render_stream(conversation_id, "".join(c._stream_parts))

    def live_calls(self) -> tuple[CallDisplay, ...]:
        return tuple(display_of(call, call.call_id in self.expanded, self.progress.get(call.call_id, ""))
                     for call in self.live.values())

    def saved_calls(self) -> dict[int, tuple[CallDisplay, ...]]:
        """The current chat's calls by reply id, as the history has them (the versions on show)."""
        c = self.controller
        if not c.current_id or c.store.schema_version() < 3:
            return {}
        from engines.chat.tool_log import calls_in

        return {message_id: tuple(display_of(call, call.call_id in self.expanded) for call in calls)
                for message_id, calls in calls_in(c.store, c.current_id).items()}

    def _toggle(self, _key: str, call_id: str) -> None:
        self.expanded.symmetric_difference_update({call_id})
        QTimer.singleShot(0, lambda: self.page._render_messages(self.controller.current_id or 0))


def schema_problem_quick(text: str) -> tuple[dict | None, str | None]:
    """The schema as JSON (no grammar check: saving a chat's choice never loads llama.cpp)."""
    try:
        schema = json.loads(text)
    except ValueError as exc:
        return None, str(exc)
    return (schema, None) if isinstance(schema, dict) else (None, "not an object")


__all__ = ["ChatTools", "ToolsBox", "TurnTools", "schema_problem"]
