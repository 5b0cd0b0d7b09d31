"""The list of conversations: new, search, rename, export and delete."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)


class ConversationList(QFrame):
    selected = Signal(int)
    new_requested = Signal()
    rename_requested = Signal(int, str)
    delete_requested = Signal(int)
    export_requested = Signal(int, str)  # conversation id, "md" or "json"
    search_changed = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("ConversationPanel")
        self.setMinimumWidth(200)
        self.setMaximumWidth(300)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 10, 8, 8)
        top = QHBoxLayout()
        self.new_button = QPushButton("＋  New chat")
        self.new_button.setObjectName("Primary")
        self.new_button.clicked.connect(self.new_requested)
        top.addWidget(self.new_button)
        layout.addLayout(top)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search chats")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.search_changed)
        layout.addWidget(self.search)
        self.list = QListWidget()
        self.list.setObjectName("ConversationList")
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.ElideRight)
        self.list.setContextMenuPolicy(Qt.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        self.list.currentItemChanged.connect(self._current_changed)
        layout.addWidget(self.list, 1)
        self._suppress = False

    def set_conversations(self, conversations, current_id: int | None) -> None:
        self._suppress = True
        self.list.clear()
        for conversation in conversations:
            item = QListWidgetItem(conversation.title)
            item.setData(Qt.UserRole, conversation.id)
            item.setToolTip(conversation.title)
            self.list.addItem(item)
            if conversation.id == current_id:
                self.list.setCurrentItem(item)
        self._suppress = False

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else int(item.data(Qt.UserRole))

    def _current_changed(self, item, _previous) -> None:
        if item is not None and not self._suppress:
            self.selected.emit(int(item.data(Qt.UserRole)))

    def _menu(self, pos) -> None:
        item = self.list.itemAt(pos)
        if item is None:
            return
        conversation_id = int(item.data(Qt.UserRole))
        menu = QMenu(self)
        menu.addAction("Rename…", lambda: self.ask_rename(conversation_id, item.text()))
        menu.addAction("Export as Markdown…", lambda: self.export_requested.emit(conversation_id, "md"))
        menu.addAction("Export as JSON…", lambda: self.export_requested.emit(conversation_id, "json"))
        menu.addSeparator()
        menu.addAction("Delete…", lambda: self.ask_delete(conversation_id, item.text()))
        menu.exec(self.list.mapToGlobal(pos))

    def ask_rename(self, conversation_id: int, title: str) -> None:
        text, ok = QInputDialog.getText(self, "Rename chat", "New name:", text=title)
        if ok and text.strip():
            self.rename_requested.emit(conversation_id, text.strip())

    def ask_delete(self, conversation_id: int, title: str) -> None:
        answer = QMessageBox.question(
            self,
            "Delete chat",
            f"Delete “{title}” and all its messages? This cannot be undone.",
            QMessageBox.Delete | QMessageBox.Cancel,
            QMessageBox.Cancel,
        )
        if answer == QMessageBox.Delete:
            self.delete_requested.emit(conversation_id)
