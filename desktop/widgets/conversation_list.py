"""The list of conversations: new, search, rename, export and delete.

Every action is reachable from the keyboard (F2 renames, Del deletes the
selected chat) as well as from the right-click menu, and the menu shows
those keys. Deleting always asks first; nothing else here changes data,
it only emits what the user asked for.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

# Built when used, not at import: a QKeySequence needs the application (and its platform) to exist.
RENAME_KEY = "F2"
DELETE_KEY = QKeySequence.StandardKey.Delete


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
        self.setMinimumWidth(180)
        self.setMaximumWidth(300)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 10, 8, 8)
        top = QHBoxLayout()
        self.new_button = QPushButton("+  New chat")  # ASCII: a fullwidth plus is a box in DejaVu, the only font of a minimal Debian
        self.new_button.setObjectName("Primary")
        self.new_button.setToolTip("Start a new chat (Ctrl+N)")
        self.new_button.clicked.connect(self.new_requested)
        top.addWidget(self.new_button)
        layout.addLayout(top)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search chats (Ctrl+F)")
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
        self.empty_note = QLabel()
        self.empty_note.setObjectName("Muted")
        self.empty_note.setWordWrap(True)
        self.empty_note.hide()
        layout.addWidget(self.empty_note)
        # WidgetShortcut: F2 and Del act on the list only while it has the focus (Del in the search box deletes text).
        # setContext, not the constructor's context=, which PySide6 drops in the (key, parent, slot) form.
        for key, slot in ((RENAME_KEY, self.rename_selected), (DELETE_KEY, self.delete_selected)):
            shortcut = QShortcut(QKeySequence(key), self.list)
            shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
            shortcut.activated.connect(slot)
        self._suppress = False

    def set_conversations(self, conversations, current_id: int | None) -> None:
        self._suppress = True
        self.list.clear()
        for conversation in conversations:
            item = QListWidgetItem(conversation.title)
            item.setData(Qt.UserRole, conversation.id)
            item.setToolTip(f"{conversation.title}\nF2 rename · Del delete · right-click for more")
            self.list.addItem(item)
            if conversation.id == current_id:
                self.list.setCurrentItem(item)
        if current_id is None:
            self.list.setCurrentItem(None)
        self._suppress = False
        searching = bool(self.search.text().strip())
        self.empty_note.setText("No chat matches your search." if searching else "No chats yet: your first message starts one.")
        self.empty_note.setVisible(not conversations)

    def show_current(self, conversation_id: int | None) -> None:
        """Highlight the chat on show (None: a new chat, not in the list yet) without emitting ``selected``."""
        self._suppress = True
        match = None
        for row in range(self.list.count()):
            if int(self.list.item(row).data(Qt.UserRole)) == conversation_id:
                match = self.list.item(row)
        self.list.setCurrentItem(match)
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
        menu = self.menu_for(item)
        menu.exec(self.list.mapToGlobal(pos))

    def menu_for(self, item: QListWidgetItem) -> QMenu:
        """The right-click menu of one chat (the shortcut keys are shown beside their actions)."""
        conversation_id = int(item.data(Qt.UserRole))
        title = item.text()
        menu = QMenu(self)
        rename = QAction("Rename…", menu)
        rename.setShortcut(QKeySequence(RENAME_KEY))
        rename.triggered.connect(lambda: self.ask_rename(conversation_id, title))
        menu.addAction(rename)
        menu.addAction("Export as Markdown…", lambda: self.export_requested.emit(conversation_id, "md"))
        menu.addAction("Export as JSON…", lambda: self.export_requested.emit(conversation_id, "json"))
        menu.addSeparator()
        delete = QAction("Delete…", menu)
        delete.setShortcut(QKeySequence(DELETE_KEY))
        delete.triggered.connect(lambda: self.ask_delete(conversation_id, title))
        menu.addAction(delete)
        return menu

    def rename_selected(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.ask_rename(int(item.data(Qt.UserRole)), item.text())

    def delete_selected(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.ask_delete(int(item.data(Qt.UserRole)), item.text())

    def ask_rename(self, conversation_id: int, title: str) -> None:
        text, ok = QInputDialog.getText(self, "Rename chat", "New name:", text=title)
        if ok and text.strip():
            self.rename_requested.emit(conversation_id, " ".join(text.split()))

    def ask_delete(self, conversation_id: int, title: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, "Delete chat",
                          f"Delete “{title}” and all its messages? This cannot be undone.", parent=self)
        delete = box.addButton("Delete", QMessageBox.ButtonRole.DestructiveRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(cancel)
        box.setEscapeButton(cancel)
        box.exec()
        if box.clickedButton() is delete:
            self.delete_requested.emit(conversation_id)
