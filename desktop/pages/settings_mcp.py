"""Settings → MCP servers: the tool servers a chat can switch on.

Add one by command (``mcp-server-time --local-timezone UTC``, run with its
stdio) or by URL (streamable HTTP), through ``engines.tools.manage``, as
``atelier tools add`` does: the server is started and asked for its tools
before it is recorded, on a pool thread, so a slow or broken server never
freezes the window, and any failure is one line under the form. Enable or
disable, refresh its tools, remove (asked first). The tools each server
listed are shown under the list.
"""

from __future__ import annotations

import shlex

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

from desktop.workers.background import run_in_background, serial_pool
from engines.errors import EngineError


def _one_line(error) -> str:
    message = error.message if isinstance(error, EngineError) else str(error)
    return " ".join(message.split())


class McpServersSection(QGroupBox):
    """The list of tool servers, with Add, Enable/Disable, Refresh tools and Remove. ``changed`` after each change."""

    changed = Signal()

    def __init__(self, workspace, parent=None) -> None:
        super().__init__("MCP servers (tools for chat)", parent)
        self.setObjectName("McpServers")
        from engines.tools.servers import ToolServers

        self.servers = ToolServers.beside(workspace.models.file)
        self._pool = serial_pool("mcp-servers")
        self._tasks: list = []
        layout = QVBoxLayout(self)
        intro = QLabel("Programs that give the model tools. Each runs only while a chat that switched it on is "
                       "replying, and every call is shown to you first.")
        intro.setObjectName("Muted")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.list = QListWidget()
        self.list.setMinimumHeight(90)
        self.list.setMaximumHeight(140)
        layout.addWidget(self.list)
        self.tools_label = QLabel()
        self.tools_label.setObjectName("Muted")
        self.tools_label.setWordWrap(True)
        self.tools_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.tools_label)
        buttons = QHBoxLayout()
        self.enable_button = QPushButton("Disable")
        self.refresh_button = QPushButton("Refresh tools")
        self.remove_button = QPushButton("Remove…")
        for button in (self.enable_button, self.refresh_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        add_row = QHBoxLayout()
        self.name = QLineEdit()
        self.name.setPlaceholderText("name, e.g. time")
        self.name.setMaximumWidth(140)
        self.where = QLineEdit()
        self.where.setPlaceholderText("command (mcp-server-time --local-timezone UTC) or URL (http://…/mcp)")
        self.add_button = QPushButton("Add server")
        self.add_button.setObjectName("Primary")
        add_row.addWidget(self.name)
        add_row.addWidget(self.where, 1)
        add_row.addWidget(self.add_button)
        layout.addLayout(add_row)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.hide()
        layout.addWidget(self.status)
        self.list.currentItemChanged.connect(lambda *_: self._show_selected())
        self.add_button.clicked.connect(self.add)
        self.where.returnPressed.connect(self.add)
        self.enable_button.clicked.connect(self.toggle_enabled)
        self.refresh_button.clicked.connect(self.refresh_selected)
        self.remove_button.clicked.connect(self.remove_selected)
        self.reload()

    # ---- the list ------------------------------------------------------------

    def reload(self, select: str | None = None) -> None:
        select = select or self.selected_name()
        self.list.clear()
        try:
            servers = self.servers.all()
        except EngineError as exc:
            servers = []
            self.say(_one_line(exc), error=True)
        for server in servers:
            state = "on" if server.enabled else "disabled"
            count = f"{len(server.tools)} tool{'s' if len(server.tools) != 1 else ''}"
            item = QListWidgetItem(f"{server.name}  ·  {state}  ·  {count}  ·  {server.where}")
            item.setData(Qt.ItemDataRole.UserRole, server.name)
            item.setToolTip(server.where)
            self.list.addItem(item)
            if server.name == select:
                self.list.setCurrentItem(item)
        if self.list.currentItem() is None and self.list.count():
            self.list.setCurrentRow(0)
        if not servers:
            self.tools_label.setText("No servers yet. Add one below: a command that speaks MCP on its standard "
                                     "input and output, or the URL of a streamable-HTTP server.")
        self._show_selected()

    def selected_name(self) -> str | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _show_selected(self) -> None:
        name = self.selected_name()
        server = self.servers.get(name) if name else None
        for button in (self.enable_button, self.refresh_button, self.remove_button):
            button.setEnabled(server is not None and not self.busy)
        if server is None:
            return
        self.enable_button.setText("Disable" if server.enabled else "Enable")
        if server.tools:
            lines = [f"• {tool.name}: {' '.join(tool.description.split())[:160] or 'no description'}"
                     for tool in server.tools]
            self.tools_label.setText(f"{server.name} offers:\n" + "\n".join(lines))
        else:
            self.tools_label.setText(f"{server.name} listed no tools. Refresh tools to ask it again.")

    @property
    def busy(self) -> bool:
        return any(not task.finished for task in self._tasks)

    def say(self, text: str, error: bool = False) -> None:
        self.status.setObjectName("Error" if error else "Muted")
        self.status.setStyleSheet("")  # the object name's style applies
        self.status.setText(text)
        self.status.setVisible(bool(text))

    # ---- actions -------------------------------------------------------------

    def add(self) -> None:
        """Start the server on a pool thread, list its tools, record it; one line when anything fails."""
        from engines.tools.manage import add_server

        name, where = self.name.text().strip(), self.where.text().strip()
        if not name or not where:
            self.say("Give the server a name and its command or URL.", error=True)
            return
        if where.lower().startswith(("http://", "https://")):
            kwargs = {"url": where}
        else:
            try:
                kwargs = {"command": shlex.split(where)}
            except ValueError as exc:
                self.say(f"The command cannot be read: {exc}.", error=True)
                return
        servers = self.servers
        self.say(f"Starting {name} and asking for its tools…")
        self._run(lambda: add_server(servers, name, **kwargs), self._added)

    def _added(self, server) -> None:
        self.name.clear()
        self.where.clear()
        self.say(f"Added {server.name}: {len(server.tools)} tool(s). Switch it on in a chat's Tools section.")
        self.reload(select=server.name)
        self.changed.emit()

    def toggle_enabled(self) -> None:
        name = self.selected_name()
        server = self.servers.get(name) if name else None
        if server is None:
            return
        try:
            self.servers.set_enabled(name, not server.enabled)
        except EngineError as exc:
            self.say(_one_line(exc), error=True)
            return
        self.say(f"{name} is {'disabled: no chat starts it' if server.enabled else 'enabled'}.")
        self.reload(select=name)
        self.changed.emit()

    def refresh_selected(self) -> None:
        from engines.tools.manage import refresh_tools

        name = self.selected_name()
        server = self.servers.get(name) if name else None
        if server is None:
            return
        servers = self.servers
        self.say(f"Asking {name} for its tools…")
        self._run(lambda: refresh_tools(servers, server), lambda tools: self._refreshed(name, tools))

    def _refreshed(self, name: str, tools) -> None:
        self.say(f"{name} lists {len(tools)} tool(s).")
        self.reload(select=name)
        self.changed.emit()

    def remove_selected(self) -> None:
        from engines.tools.manage import remove_server

        name = self.selected_name()
        if name is None:
            return
        answer = QMessageBox.question(self, "Remove the tool server?",
                                      f"Remove {name}? Chats that switched it on no longer offer its tools.",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            remove_server(self.servers, name)
        except EngineError as exc:
            self.say(_one_line(exc), error=True)
            return
        self.say(f"Removed {name}.")
        self.reload()
        self.changed.emit()

    def _run(self, work, on_done) -> None:
        task = run_in_background(work, on_done=lambda result: self._done(on_done, result), on_error=self._failed,
                                 pool=self._pool)
        self._tasks = [t for t in self._tasks if not t.finished] + [task]
        self.add_button.setEnabled(False)
        self._show_selected()

    def _done(self, on_done, result) -> None:
        self.add_button.setEnabled(True)
        on_done(result)

    def _failed(self, error) -> None:
        self.add_button.setEnabled(True)
        self.say(_one_line(error), error=True)
        self._show_selected()

    def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
