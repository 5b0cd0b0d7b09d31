"""The main window: a sidebar of pages and the page stack.

Dropping a .gguf file anywhere on the window imports it.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.pages.chat_controller import ChatController
from desktop.pages.chat_page import ChatPage
from desktop.pages.images_page import ImagesPage
from desktop.pages.placeholder_page import PlaceholderPage
from desktop.pages.settings_page import SettingsPage
from engines.workspace import Workspace
from resources import icon_path

PAGES = ("Chat", "Images", "Models", "Settings")


class MainWindow(QMainWindow):
    def __init__(self, workspace: Workspace, controller: ChatController | None = None) -> None:
        super().__init__()
        self.workspace = workspace
        self.setWindowTitle("Atelier")
        self.setMinimumSize(QSize(1024, 640))
        self.resize(1280, 800)
        self.setAcceptDrops(True)

        root = QWidget()
        layout = QHBoxLayout(root)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.setCentralWidget(root)

        sidebar = QWidget()
        sidebar.setObjectName("Sidebar")
        sidebar.setFixedWidth(168)
        side_layout = QVBoxLayout(sidebar)
        side_layout.setContentsMargins(0, 0, 0, 8)
        title = QLabel("Atelier")
        title.setObjectName("AppTitle")
        side_layout.addWidget(title)
        self.nav = QListWidget()
        self.nav.setObjectName("SidebarList")
        self.nav.setIconSize(QSize(20, 20))
        for label in PAGES:
            self.nav.addItem(QListWidgetItem(QIcon(str(icon_path(f"{label.lower()}.svg"))), label))
        side_layout.addWidget(self.nav, 1)
        privacy = QLabel("Offline · private")
        privacy.setObjectName("Muted")
        privacy.setContentsMargins(18, 0, 0, 0)
        side_layout.addWidget(privacy)
        layout.addWidget(sidebar)

        self.stack = QStackedWidget()
        layout.addWidget(self.stack, 1)
        self.chat_controller = controller or ChatController(workspace)
        self.chat_page = ChatPage(self.chat_controller)
        self.images_page = ImagesPage(workspace)
        self.models_page = PlaceholderPage(
            "Models — coming soon",
            "Browse a curated catalog, see whether each model fits this machine before downloading, "
            "and download with resume and verification. For now, use “Add model file…” on the Chat page "
            "or drop a .gguf file onto this window.",
        )
        self.settings_page = SettingsPage(workspace)
        for page in (self.chat_page, self.images_page, self.models_page, self.settings_page):
            self.stack.addWidget(page)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.nav.setCurrentRow(0)

    def show_page(self, name: str) -> None:
        self.nav.setCurrentRow(PAGES.index(name))

    # ---- drag and drop ---------------------------------------------------

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if any(url.toLocalFile().lower().endswith(".gguf") for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        for url in event.mimeData().urls():
            path = url.toLocalFile()
            if path.lower().endswith(".gguf"):
                self.show_page("Chat")
                self.chat_page.import_model(path)
        event.acceptProposedAction()

    def closeEvent(self, event) -> None:  # noqa: N802
        self.chat_controller.shutdown()
        self.images_page.shutdown()
        super().closeEvent(event)
