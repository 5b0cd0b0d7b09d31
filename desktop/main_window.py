"""The main window: a sidebar of pages and the page stack.

Dropping a .gguf file or a model folder anywhere on the window imports it.
The window holds the app's one engine scheduler (engines.scheduler): the
chat page, the images page and a server started from the GUI share it, so
a model loaded for one is not loaded twice and their work takes turns on
the CPU. It is closed last, when every page has stopped.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QIcon, QKeySequence, QShortcut
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
from desktop.pages.documents_page import DocumentsPage
from desktop.pages.images_page import ImagesPage
from desktop.pages.server_page import ServerPage
from desktop.pages.settings_page import SettingsPage
from desktop.privacy import PrivacyBadge, offline_mode_on
from engines.workspace import Workspace
from resources import icon_path

PAGES = ("Chat", "Documents", "Images", "Models", "Server", "Settings")


class MainWindow(QMainWindow):
    def __init__(self, workspace: Workspace, controller: ChatController | None = None, scheduler=None) -> None:
        super().__init__()
        self.workspace = workspace
        self._owns_scheduler = scheduler is None
        self.scheduler = scheduler or workspace.scheduler()  # cheap: no thread or process until the first request
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
        sidebar.setFixedWidth(176)
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
        self.privacy_badge = PrivacyBadge(offline_mode_on(workspace.settings))  # says when offline mode is on
        self.privacy_badge.setContentsMargins(18, 0, 12, 0)
        side_layout.addWidget(self.privacy_badge)
        layout.addWidget(sidebar)

        self.stack = QStackedWidget()
        layout.addWidget(self.stack, 1)
        self.chat_controller = controller or ChatController(workspace, scheduler=self.scheduler)
        self.chat_page = ChatPage(self.chat_controller)
        self.documents_page = DocumentsPage(workspace, self.scheduler)  # indexes on this window's scheduler
        self.documents_page.collections_changed.connect(self.chat_page.documents.refresh_collections)
        self.documents_page.models_requested.connect(lambda: self.show_page("Models"))
        self.images_page = ImagesPage(workspace, scheduler=self.scheduler)
        # The Models page (catalog, Hub, downloads) pulls in requests, huggingface_hub and
        # numpy: it is built right after the window is shown, or on first visit.
        self.models_page = None
        self._models_slot = QWidget()
        self.server_page = ServerPage(workspace, self.scheduler)  # the API server, on this window's scheduler
        self.settings_page = SettingsPage(workspace)
        self.settings_page.offline_changed.connect(self.privacy_badge.set_offline)
        # the badge says what leaves the computer now: the chat page's model on a remote server, the API server
        # open to other machines; both pages tell it when that changes
        self.privacy_badge.set_chat_model(self.chat_page.shown_model)
        self.chat_page.model_shown.connect(self.privacy_badge.set_chat_model)
        self.server_page.running_changed.connect(
            lambda _running: self.privacy_badge.set_api_server(self.server_page.runner.listening()))
        self.server_page.set_chat_model(self.chat_page.shown_model)
        self.chat_page.model_shown.connect(self.server_page.set_chat_model)
        self.privacy_badge.clicked.connect(lambda: self.show_page("Settings"))
        for page in (self.chat_page, self.documents_page, self.images_page, self._models_slot, self.server_page,
                     self.settings_page):
            self.stack.addWidget(page)
        self.nav.currentRowChanged.connect(self._navigate)
        self.nav.setCurrentRow(0)
        QShortcut(QKeySequence("Ctrl+N"), self, self.new_chat, context=Qt.ShortcutContext.WindowShortcut)
        QShortcut(QKeySequence("Ctrl+Q"), self, self.close, context=Qt.ShortcutContext.WindowShortcut)
        # after the first paint; a timer the window owns, so a window closed before it fires
        # (a test, a quick quit) never builds the page on half-destroyed widgets
        if workspace.settings_problem:  # the file was set aside and the defaults are in use: say so once
            self.chat_controller.banner.emit(workspace.settings_problem)
        self._models_timer = QTimer(self)
        self._models_timer.setSingleShot(True)
        self._models_timer.timeout.connect(self.ensure_models_page)
        self._models_timer.start(400)

    def _navigate(self, row: int) -> None:
        if PAGES[row] == "Models":
            self.ensure_models_page()
        self.stack.setCurrentIndex(row)

    def ensure_models_page(self):
        """Build the Models page once; its download queue resumes unfinished downloads."""
        if self.models_page is None:
            from desktop.pages.models_page import ModelsPage

            self.models_page = ModelsPage(self.workspace.library())
            self.models_page.model_installed.connect(lambda _id: self._models_changed())
            self.models_page.model_removed.connect(lambda _id: self._models_changed())
            index = self.stack.indexOf(self._models_slot)
            self.stack.insertWidget(index, self.models_page)
            self.stack.removeWidget(self._models_slot)
            self._models_slot.deleteLater()
        return self.models_page

    def _models_changed(self) -> None:
        self.chat_page.refresh_models()
        self.images_page.refresh_models(None)
        self.documents_page.refresh()

    def show_page(self, name: str) -> None:
        self.nav.setCurrentRow(PAGES.index(name))

    def new_chat(self) -> None:
        self.show_page("Chat")
        self.chat_page.new_chat()

    def bring_to_front(self) -> None:
        """Another start of Atelier on this profile asked for this window (single instance)."""
        if self.isMinimized():
            self.showNormal()
        self.show()
        self.raise_()
        self.activateWindow()

    # ---- drag and drop ---------------------------------------------------

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if any(url.isLocalFile() for url in event.mimeData().urls()):  # files and folders: the probe decides
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        """A .gguf becomes the chat model; anything else (an image-model folder, a LoRA...) goes to the Models
        page, which identifies it off the GUI thread and says what it is. Images dropped on the Chat page are
        attached to the message being written, as on the composer."""
        from desktop.widgets.composer import image_files

        images = image_files(event.mimeData())
        if images and self.stack.currentWidget() is self.chat_page:
            self.chat_page.attach_files(images)
            event.acceptProposedAction()
            return
        for url in event.mimeData().urls():
            path = url.toLocalFile()
            if path.lower().endswith(".gguf"):
                self.show_page("Chat")
                self.chat_page.import_model(path)
            elif path:
                self.show_page("Models")
                page = self.ensure_models_page()
                page.tabs.setCurrentWidget(page.installed_tab)
                page.installed_tab.import_file(path)
        event.acceptProposedAction()

    def closeEvent(self, event) -> None:  # noqa: N802
        self._models_timer.stop()
        self.server_page.shutdown()  # first: no new API work while the pages stop; its own is cancelled
        self.chat_page.shutdown()
        self.chat_controller.shutdown()
        self.images_page.shutdown()
        self.documents_page.shutdown()
        if self.models_page is not None:
            self.models_page.shutdown()
        if self._owns_scheduler:
            self.scheduler.shutdown()  # every model's host, after the pages stopped using them
        super().closeEvent(event)
