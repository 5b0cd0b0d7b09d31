"""The big image in the middle of the Images page, scaled to fit and keeping its aspect."""

from __future__ import annotations

from PySide6.QtCore import QMargins, Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QLabel, QSizePolicy


class ImageView(QLabel):
    """Shows one pixmap scaled smoothly to the space it has (live previews are upscaled too)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("ImageCanvas")
        self.setAlignment(Qt.AlignCenter)
        self.setWordWrap(True)
        # Ignored: the label never asks for its pixmap's size, so a large image cannot grow the window.
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Ignored)
        self.setMinimumSize(160, 160)
        self.setStyleSheet(
            "QLabel#ImageCanvas { background: palette(alternate-base); border: 1px solid palette(mid);"
            " border-radius: 10px; color: palette(placeholder-text); padding: 8px; }"
        )
        self._source: QPixmap | None = None
        self.kind = "empty"  # "empty", "preview" or "image": what is on screen

    def show_png(self, data: bytes, kind: str = "image") -> bool:
        pixmap = QPixmap()
        if not pixmap.loadFromData(data):
            return False
        self._set(pixmap, kind)
        return True

    def show_file(self, path: str) -> bool:
        pixmap = QPixmap(path)
        if pixmap.isNull():
            self.show_message("This image file is missing or cannot be read.")
            return False
        self._set(pixmap, "image")
        return True

    def show_message(self, text: str) -> None:
        self._source = None
        self.kind = "empty"
        self.clear()
        self.setText(text)

    def source(self) -> QPixmap | None:
        return self._source

    def _set(self, pixmap: QPixmap, kind: str) -> None:
        self._source = pixmap
        self.kind = kind
        self._rescale()

    def _rescale(self) -> None:
        if self._source is None:
            return
        margin = 18
        target = self.size().shrunkBy(QMargins(margin, margin, margin, margin))
        if target.width() < 8 or target.height() < 8:
            return
        self.setPixmap(self._source.scaled(target, Qt.KeepAspectRatio, Qt.SmoothTransformation))

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._rescale()
