"""Asking the user whether the model may call a tool: the dialog, and the bridge from the turn's thread.

``engines.tools.loop.Approvals`` calls ``ask(call)`` on the thread that
runs the chat turn (the chat worker's QThread), and waits for its answer.
:class:`ApprovalBridge` lives on the GUI thread: ``ask`` (worker thread)
emits a queued signal and blocks on a ``threading.Event``; the GUI thread
shows :class:`ToolApprovalDialog` (window-modal, never ``exec``) and sets
the answer. Stop (:meth:`ApprovalBridge.cancel`) answers "refuse", closes
the dialog and refuses every later question of that turn, so the turn
ends instead of waiting for a dialog nobody will answer.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from desktop.chat.tool_calls import pretty_arguments


class ToolApprovalDialog(QDialog):
    """The tool, its server and its arguments; Allow once, Always allow TOOL, Refuse. Closing it refuses."""

    decided = Signal(str)  # "once" | "always" | "refuse"

    def __init__(self, call, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ToolApproval")
        self.setWindowTitle("Allow a tool call?")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self._decision: str | None = None
        layout = QVBoxLayout(self)
        server = call.server or "unknown server"
        where = "Atelier's own tools" if server == "atelier" else f"the tool server '{server}'"
        title = QLabel(f"The model wants to call <b>{_escape(call.name)}</b> from {_escape(where)}.")
        title.setWordWrap(True)
        layout.addWidget(title)
        layout.addWidget(QLabel("With these arguments:"))
        self.arguments = QPlainTextEdit(pretty_arguments(call.arguments_json))
        self.arguments.setReadOnly(True)
        self.arguments.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.arguments.setMinimumSize(420, 120)
        layout.addWidget(self.arguments, 1)
        note = QLabel("Nothing runs until you choose. “Always” lasts for this chat while Atelier is open.")
        note.setObjectName("Muted")
        note.setWordWrap(True)
        layout.addWidget(note)
        row = QHBoxLayout()
        self.refuse_button = QPushButton("Refuse")
        self.always_button = QPushButton(f"Always allow {call.name}")
        self.once_button = QPushButton("Allow once")
        self.once_button.setObjectName("Primary")
        self.once_button.setDefault(True)
        row.addWidget(self.refuse_button)
        row.addStretch(1)
        row.addWidget(self.always_button)
        row.addWidget(self.once_button)
        layout.addLayout(row)
        self.refuse_button.clicked.connect(lambda: self.answer("refuse"))
        self.always_button.clicked.connect(lambda: self.answer("always"))
        self.once_button.clicked.connect(lambda: self.answer("once"))
        self.rejected.connect(lambda: self.answer("refuse"))  # Esc or the window's close button

    def answer(self, decision: str) -> None:
        if self._decision is not None:
            return
        self._decision = decision
        self.decided.emit(decision)
        self.done(QDialog.DialogCode.Accepted if decision != "refuse" else QDialog.DialogCode.Rejected)


def _escape(text: str) -> str:
    from html import escape

    return escape(text, quote=False)


class ApprovalBridge(QObject):
    """``ask`` on the turn's thread, the dialog on the GUI thread. ``dialog`` is the one open now, if any."""

    _asked = Signal(object)
    asked = Signal(object)  # a dialog opened (tests and screenshots wait on it)

    def __init__(self, parent_widget: QWidget | None = None) -> None:
        super().__init__(parent_widget)
        self._parent_widget = parent_widget
        self._lock = threading.Lock()
        self._event: threading.Event | None = None
        self._answer = "refuse"
        self._stopped = False
        self.dialog: ToolApprovalDialog | None = None
        self._asked.connect(self._show, Qt.ConnectionType.QueuedConnection)

    def start_turn(self) -> None:
        """A new turn: questions are asked again (a Stop only refuses within its own turn)."""
        with self._lock:
            self._stopped = False

    def ask(self, call) -> str:
        """Called on the turn's thread; blocks until the user answers or the turn is stopped."""
        event = threading.Event()
        with self._lock:
            if self._stopped:
                return "refuse"
            self._event, self._answer = event, "refuse"
        self._asked.emit(call)
        event.wait()
        with self._lock:
            self._event = None
            return self._answer

    def cancel(self) -> None:
        """Stop (any thread): the question waiting now, and every later one of this turn, is refused."""
        with self._lock:
            self._stopped = True
            event, self._answer = self._event, "refuse"
        if event is not None:
            event.set()
        self._close_dialog()

    def _set(self, decision: str) -> None:
        with self._lock:
            event = self._event
            self._answer = decision
        if event is not None:
            event.set()

    @Slot(object)
    def _show(self, call) -> None:
        with self._lock:
            waiting = self._event is not None and not self._event.is_set()
        if not waiting:
            return  # stopped before the question reached the window
        self._close_dialog()
        dialog = ToolApprovalDialog(call, self._parent_widget.window() if self._parent_widget else None)
        dialog.decided.connect(self._set)
        dialog.finished.connect(lambda _r, d=dialog: self._forget(d))
        self.dialog = dialog
        dialog.open()
        self.asked.emit(dialog)

    def _forget(self, dialog) -> None:
        if self.dialog is dialog:
            self.dialog = None
        dialog.deleteLater()

    def _close_dialog(self) -> None:
        dialog = self.dialog
        if dialog is not None and threading.current_thread() is threading.main_thread():
            dialog.answer("refuse")
