"""The gallery strip: thumbnails of past images, newest first, and what to do with one.

Thumbnails are read a few at a time from the event loop, so a gallery of
hundreds of images opens at once and fills in as it goes.

"Upscale ×2 / ×4" (the button's menu and the context menu, built by one
method so they never differ) stays those two plain entries while at most one
upscaler is installed. With several, each entry names the upscaler it will
use, and an "Upscale with" submenu lists them all with their own scale, the
default for each scale marked, to pick one (remembered by the page, which
owns the choice: see :meth:`GalleryView.set_upscaler_source`).
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QActionGroup, QColor, QIcon, QImageReader, QKeySequence, QPainter, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engines.diffusion.request_words import steps_words
from engines.library.upscaler_choice import default_option

THUMB = 96
THUMBS_PER_TICK = 8
UPSCALES = (2, 4)  # what "Upscale" offers (atelier upscale --scale takes 3 and 8 too)
UPSCALE_WITH = "Upscale with"
EACH_DEFAULT = "Default for each scale"
ID_ROLE = Qt.UserRole


def _placeholder(color: str = "#8888", missing: bool = False) -> QIcon:
    pixmap = QPixmap(THUMB, THUMB)
    pixmap.fill(Qt.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.Antialiasing)
    painter.setPen(Qt.NoPen)
    painter.setBrush(QColor(color))
    painter.drawRoundedRect(4, 4, THUMB - 8, THUMB - 8, 8, 8)
    if missing:
        painter.setPen(QColor("#c0392b"))
        painter.drawText(pixmap.rect(), Qt.AlignCenter, "missing")
    painter.end()
    return QIcon(pixmap)


def _menu_text(text: str) -> str:
    """``text`` for a menu entry: a name's "&" shown as itself, not taken as a keyboard shortcut's marker."""
    return text.replace("&", "&&")


def load_thumbnail(path: str) -> QIcon | None:
    """A small icon read at reduced size (PNG decoding still reads the file, but never scales it in full)."""
    reader = QImageReader(path)
    size = reader.size()
    if size.isValid() and (size.width() > THUMB or size.height() > THUMB):
        reader.setScaledSize(size.scaled(THUMB, THUMB, Qt.KeepAspectRatio))
    image = reader.read()
    if image.isNull():
        return None
    if image.width() < THUMB and image.height() < THUMB:  # tiny images: enlarge so they read as thumbnails
        image = image.scaled(THUMB, THUMB, Qt.KeepAspectRatio, Qt.SmoothTransformation)
    return QIcon(QPixmap.fromImage(image))


class GalleryView(QWidget):
    selected = Signal(str)  # image id ("" when nothing is selected)
    open_requested = Signal(str)
    copy_requested = Signal(str)
    reveal_requested = Signal(str)
    delete_requested = Signal(str)
    reuse_requested = Signal(str)
    upscale_requested = Signal(str, int)  # image id, scale (2 or 4)
    upscaler_chosen = Signal(str)  # an upscaler's id picked under "Upscale with" ("" for the default for each scale)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        # The title on its own line and the buttons on the next: in one row they were cut off at 1024×640.
        header = QHBoxLayout()
        self.title = QLabel("Gallery")
        self.title.setStyleSheet("font-weight: 600;")
        self.count_label = QLabel()
        self.count_label.setObjectName("Muted")
        header.addWidget(self.title)
        header.addWidget(self.count_label)
        header.addStretch(1)
        layout.addLayout(header)
        actions = QHBoxLayout()
        self.reuse_button = QPushButton("Use these settings again")
        self.open_button = QPushButton("Open")
        self.copy_button = QPushButton("Copy")
        self.reveal_button = QPushButton("Reveal")
        self.delete_button = QPushButton("Delete…")
        self.reuse_button.setToolTip("Put this image's prompt, seed, settings, model and backend back into the controls")
        self.open_button.setToolTip("Open in the default image viewer (double-click a thumbnail does the same)")
        self.copy_button.setToolTip("Copy the image to the clipboard (Ctrl+C)")
        self.reveal_button.setToolTip("Show the image file in its folder")
        self.delete_button.setToolTip("Delete the image from the gallery and from the disk (Del)")
        for button, signal in ((self.reuse_button, self.reuse_requested), (self.open_button, self.open_requested),
                               (self.copy_button, self.copy_requested), (self.reveal_button, self.reveal_requested),
                               (self.delete_button, self.delete_requested)):
            button.clicked.connect(lambda _=False, s=signal: self._emit(s))
            actions.addWidget(button)
        self.upscale_button = QPushButton("Upscale")
        self.upscale_button.setToolTip("Make this image 2 or 4 times larger with an installed upscaler (ESRGAN); the "
                                       "result joins the gallery next to it")
        self._upscalers = None  # set_upscaler_source: () -> (the installed UpscalerOptions, the chosen id or None)
        upscale_menu = QMenu(self.upscale_button)
        upscale_menu.aboutToShow.connect(self.refresh_upscale_menu)  # an upscaler may have been added or removed
        self.upscale_button.setMenu(upscale_menu)
        self.refresh_upscale_menu()
        actions.insertWidget(1, self.upscale_button)
        actions.addStretch(1)
        layout.addLayout(actions)
        self.setMinimumWidth(actions.sizeHint().width())  # buttons keep their whole labels; the page makes room

        self.list = QListWidget()
        self.list.setObjectName("GalleryList")
        self.list.setViewMode(QListView.IconMode)
        self.list.setFlow(QListView.LeftToRight)
        self.list.setWrapping(False)
        self.list.setMovement(QListView.Static)
        self.list.setResizeMode(QListView.Adjust)
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setGridSize(QSize(THUMB + 12, THUMB + 12))
        self.list.setUniformItemSizes(True)
        self.list.setSelectionMode(QAbstractItemView.SingleSelection)
        self.list.setHorizontalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.list.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.list.setFixedHeight(THUMB + 16 + self.list.horizontalScrollBar().sizeHint().height())
        self.list.setStyleSheet(
            "QListWidget#GalleryList { border: 1px solid palette(mid); border-radius: 8px; background: palette(base);"
            " padding: 2px; }"
            "QListWidget#GalleryList::item { border: 2px solid transparent; border-radius: 6px; padding: 0px; }"
            "QListWidget#GalleryList::item:selected { border: 2px solid palette(highlight); background: transparent; }"
            "QListWidget#GalleryList::item:hover:!selected { border: 2px solid palette(mid); }"
        )
        self.list.setContextMenuPolicy(Qt.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        self.list.currentItemChanged.connect(self._current_changed)
        self.list.itemDoubleClicked.connect(lambda item: self.open_requested.emit(item.data(ID_ROLE)))
        layout.addWidget(self.list)
        self.problem_label = QLabel()  # why the gallery's index cannot be used, for as long as it cannot
        self.problem_label.setObjectName("Banner")
        self.problem_label.setWordWrap(True)
        self.problem_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.problem_label.hide()
        layout.addWidget(self.problem_label)
        self.empty_label = QLabel("Your images will appear here. Every image is saved the moment it is made.")
        self.empty_label.setObjectName("Muted")
        layout.addWidget(self.empty_label)
        for key, signal in ((QKeySequence.Delete, self.delete_requested), (QKeySequence.Copy, self.copy_requested)):
            shortcut = QShortcut(key, self.list)
            shortcut.setContext(Qt.WidgetShortcut)
            shortcut.activated.connect(lambda s=signal: self._emit(s))

        self._paths: dict[str, str] = {}
        self._items: dict[str, QListWidgetItem] = {}
        self._pending: list[str] = []
        self._placeholder = _placeholder()
        self._missing = _placeholder(missing=True)
        self._timer = QTimer(self)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._load_some)
        self._update_state()

    # ---- contents --------------------------------------------------------

    def set_entries(self, entries) -> None:
        """Show ``entries`` (newest first); keeps the selection when that image is still there."""
        keep = self.current_id()
        self.list.blockSignals(True)
        self.list.clear()
        self._items.clear()
        self._paths.clear()
        self._pending.clear()
        for entry in entries:
            self.list.addItem(self._item(entry))
        self.list.blockSignals(False)
        if keep:
            self.select(keep, emit=False)
        self._update_state()
        self._timer.start()

    def set_problem(self, text: str) -> None:
        self.problem_label.setText(text)
        self.problem_label.setVisible(bool(text))

    def add_entry(self, entry, select: bool = False, beside: str = "") -> None:
        """A new image at the front of the strip, or just before the image ``beside`` (an upscale, by its source)."""
        item = self._item(entry)
        source = self._find(beside) if beside else None
        self.list.insertItem(self.list.row(source) if source is not None else 0, item)
        self._pending.remove(entry.id)
        icon = load_thumbnail(entry.path)
        item.setIcon(icon or self._missing)
        if select:
            self.select(entry.id, emit=False)
        self.list.scrollToItem(item)
        self._update_state()

    def remove(self, image_id: str) -> None:
        item = self._find(image_id)
        if item is not None:
            self.list.takeItem(self.list.row(item))
        self._paths.pop(image_id, None)
        self._items.pop(image_id, None)
        self._update_state()

    def select(self, image_id: str, emit: bool = True) -> None:
        item = self._find(image_id)
        if item is None:
            return
        if not emit:
            self.list.blockSignals(True)
        self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self.list.scrollToItem(item)
        self._update_state()

    def current_id(self) -> str:
        item = self.list.currentItem()
        return item.data(ID_ROLE) if item is not None else ""

    def ids(self) -> list[str]:
        return [self.list.item(i).data(ID_ROLE) for i in range(self.list.count())]

    def count(self) -> int:
        return self.list.count()

    def _item(self, entry) -> QListWidgetItem:
        item = QListWidgetItem(self._placeholder, "")
        item.setData(ID_ROLE, entry.id)
        item.setSizeHint(QSize(THUMB + 8, THUMB + 8))
        prompt = entry.prompt if len(entry.prompt) <= 120 else entry.prompt[:117] + "…"
        item.setToolTip(f"{prompt}\nSeed {entry.seed} · {entry.width}×{entry.height} · {steps_words(entry.steps)} · "
                        f"{entry.scheduler} · {entry.model}")
        self._paths[entry.id] = entry.path
        self._items[entry.id] = item
        self._pending.append(entry.id)
        return item

    def _find(self, image_id: str) -> QListWidgetItem | None:
        return self._items.get(image_id)

    def _load_some(self) -> None:
        for _ in range(THUMBS_PER_TICK):
            if not self._pending:
                self._timer.stop()
                return
            image_id = self._pending.pop(0)
            item = self._find(image_id)
            if item is not None:
                item.setIcon(load_thumbnail(self._paths.get(image_id, "")) or self._missing)

    # ---- upscale menus -----------------------------------------------------

    def set_upscaler_source(self, source) -> None:
        """Where the Upscale menus learn the installed upscalers: ``source()`` returns ``(options, chosen_id)``.

        ``options``: the installed upscalers as ``engines.library.upscaler_choice.UpscalerOption``; ``chosen_id``:
        the one the user picked (None, or one no longer installed: the default for each scale). Asked each time
        a menu opens, so an upscaler installed on the Models page shows at once.
        """
        self._upscalers = source
        self.refresh_upscale_menu()

    def refresh_upscale_menu(self) -> None:
        """Rebuild the Upscale button's menu from what is installed now."""
        menu = self.upscale_button.menu()
        for old in menu.findChildren(QMenu):  # the last "Upscale with" submenu: clear() leaves child menus alive
            old.deleteLater()
        menu.clear()
        self._add_upscale_items(menu)

    def _add_upscale_items(self, menu: QMenu) -> None:
        """The upscale entries of ``menu``: plain "Upscale ×N" with at most one upscaler, else named, and a chooser."""
        options, chosen_id = self._upscalers() if self._upscalers is not None else ([], None)
        if len(options) < 2:  # none (the page says where to get one) or one: nothing to choose
            for scale in UPSCALES:
                menu.addAction(f"Upscale ×{scale}", lambda s=scale: self._emit_upscale(s))
            return
        chosen = next((option for option in options if option.id == chosen_id), None)
        for scale in UPSCALES:
            used = chosen or default_option(options, scale)
            menu.addAction(_menu_text(f"Upscale ×{scale} with {used.name}"), lambda s=scale: self._emit_upscale(s))
        submenu = menu.addMenu(UPSCALE_WITH)
        submenu.setToolTipsVisible(True)
        group = QActionGroup(submenu)
        each = submenu.addAction(EACH_DEFAULT, lambda: self.upscaler_chosen.emit(""))
        each.setToolTip("Each scale uses the upscaler made for it (else the nearest larger one)")
        submenu.addSeparator()
        picks = [each]
        for option in options:
            defaults = [f"×{scale}" for scale in UPSCALES if default_option(options, scale) is option]
            label = option.label + (f" — default for {' and '.join(defaults)}" if defaults else "")
            action = submenu.addAction(_menu_text(label), lambda i=option.id: self.upscaler_chosen.emit(i))
            action.setData(option.id)
            picks.append(action)
        for action in picks:
            action.setCheckable(True)
            group.addAction(action)
        (picks[1 + options.index(chosen)] if chosen else each).setChecked(True)

    # ---- actions ---------------------------------------------------------

    def _emit_upscale(self, scale: int) -> None:
        image_id = self.current_id()
        if image_id:
            self.upscale_requested.emit(image_id, scale)

    def _emit(self, signal) -> None:
        image_id = self.current_id()
        if image_id:
            signal.emit(image_id)

    def _current_changed(self, current, _previous) -> None:
        self._update_state()
        self.selected.emit(current.data(ID_ROLE) if current is not None else "")

    def _update_state(self) -> None:
        has = self.list.currentItem() is not None
        for button in (self.reuse_button, self.upscale_button, self.open_button, self.copy_button, self.reveal_button,
                       self.delete_button):
            button.setEnabled(has)
        count = self.list.count()
        self.count_label.setText(f"{count} image{'s' if count != 1 else ''}" if count else "")
        self.empty_label.setVisible(count == 0)
        self.list.setVisible(count > 0)

    def _menu(self, pos) -> None:
        item = self.list.itemAt(pos)
        if item is None:
            return
        self.list.setCurrentItem(item)
        menu = QMenu(self)
        for label, signal in (("Use these settings again", self.reuse_requested), ("Open", self.open_requested),
                              ("Copy image", self.copy_requested), ("Reveal in folder", self.reveal_requested)):
            menu.addAction(label, lambda s=signal: self._emit(s))
        self._add_upscale_items(menu)
        menu.addSeparator()
        menu.addAction("Delete…", lambda: self._emit(self.delete_requested))
        menu.exec(self.list.viewport().mapToGlobal(pos))
        menu.deleteLater()  # one menu per right-click: never let them pile up under the view
