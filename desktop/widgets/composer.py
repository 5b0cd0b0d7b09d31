"""The message composer: Enter sends, Shift+Enter adds a new line; images can be dropped or pasted in.

An image file dropped on it, or an image pasted into it (a screenshot on
the clipboard), is handed to the page (:attr:`Composer.images_dropped`,
:attr:`Composer.image_pasted`), which checks it and attaches it to the next
message for a vision model; the text never gets the file's path.
"""

from __future__ import annotations

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QMimeData, Qt, Signal
from PySide6.QtGui import QImage, QKeyEvent, QPixmap
from PySide6.QtWidgets import QPlainTextEdit

from engines.image_input import IMAGE_SUFFIXES


def image_files(mime: QMimeData) -> list[str]:
    """The local image files in a drop (by name: the page reads and checks them); [] when it holds anything else."""
    paths = [url.toLocalFile() for url in mime.urls()] if mime.hasUrls() else []
    return paths if paths and all(p.lower().endswith(IMAGE_SUFFIXES) for p in paths) else []


def png_bytes(image: QImage) -> bytes:
    """A pasted image as PNG bytes (lossless: what was copied is what the model sees)."""
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(data.data())


class Composer(QPlainTextEdit):
    submitted = Signal(str)
    images_dropped = Signal(list)  # paths of image files
    image_pasted = Signal(bytes)  # PNG

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("Composer")
        self.setPlaceholderText("Message the model…")  # short: it must fit a small window
        self.setToolTip("Enter sends · Shift+Enter adds a new line · Esc stops a reply · "
                        "drop or paste an image for a vision model")
        self.setTabChangesFocus(True)
        self.textChanged.connect(self._fit_height)
        self._fit_height()

    def _fit_height(self) -> None:
        """Grow with the text, from about two lines up to about eight."""
        lines = max(2, min(8, int(self.document().size().height())))
        self.setFixedHeight(lines * self.fontMetrics().lineSpacing() + 28)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt naming)
        if event.key() in (Qt.Key_Return, Qt.Key_Enter) and not (event.modifiers() & Qt.ShiftModifier):
            self.submitted.emit(self.toPlainText())  # the page decides: text, or images alone, or nothing
            event.accept()
            return
        super().keyPressEvent(event)

    def canInsertFromMimeData(self, source: QMimeData) -> bool:  # noqa: N802
        return source.hasImage() or bool(image_files(source)) or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:  # noqa: N802
        files = image_files(source)
        if files:
            self.images_dropped.emit(files)
        elif source.hasImage() and not source.hasText():
            image = source.imageData()
            if isinstance(image, QPixmap):
                image = image.toImage()
            if isinstance(image, QImage) and not image.isNull():
                self.image_pasted.emit(png_bytes(image))
        else:
            super().insertFromMimeData(source)
