"""The images attached to the message being written: thumbnails above the composer, each with a remove button.

The page checks an image before it gets here (readable, a photo format,
within the pixel cap) and says in its banner why one is refused; this
strip only holds what will be sent, in order, and hides when empty.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

THUMBNAIL_PX = 72


class AttachmentStrip(QWidget):
    changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("Attachments")
        self._images: list[tuple[bytes, str]] = []
        self._row = QHBoxLayout(self)
        self._row.setContentsMargins(0, 0, 0, 4)
        self._row.addStretch(1)
        self.hide()

    def images(self) -> tuple[bytes, ...]:
        return tuple(data for data, _name in self._images)

    def names(self) -> list[str]:
        return [name for _data, name in self._images]

    def add(self, data: bytes, name: str) -> None:
        self._images.append((data, name))
        self._rebuild()

    def remove(self, index: int) -> None:
        if 0 <= index < len(self._images):
            del self._images[index]
            self._rebuild()

    def clear(self) -> None:
        self._images.clear()
        self._rebuild()

    def _rebuild(self) -> None:
        while self._row.count() > 1:  # the stretch at the end stays
            item = self._row.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        for index, (data, name) in enumerate(self._images):
            self._row.insertWidget(index, self._tile(index, data, name))
        self.setVisible(bool(self._images))
        self.changed.emit()

    def _tile(self, index: int, data: bytes, name: str) -> QWidget:
        tile = QWidget()
        tile.setObjectName("AttachmentTile")
        column = QVBoxLayout(tile)
        column.setContentsMargins(0, 0, 6, 0)
        column.setSpacing(2)
        picture = QLabel()
        picture.setFixedSize(THUMBNAIL_PX, THUMBNAIL_PX)
        picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        image = QImage.fromData(data)
        shown = image if max(image.width(), image.height()) <= THUMBNAIL_PX else image.scaled(
            THUMBNAIL_PX, THUMBNAIL_PX, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        picture.setPixmap(QPixmap.fromImage(shown))
        picture.setToolTip(f"{name} ({image.width()}×{image.height()})")
        remove = QToolButton()
        remove.setText("✕ Remove")
        remove.setAccessibleName(f"Remove {name}")
        remove.setToolTip(f"Do not send {name}")
        remove.clicked.connect(lambda _checked=False, i=index: self.remove(i))
        column.addWidget(picture)
        column.addWidget(remove)
        return tile
