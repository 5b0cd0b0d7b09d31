"""The image-to-image group: a drop area for the starting image and the strength.

The file is read and its thumbnail decoded on a pool thread
(:func:`desktop.workers.background.run_in_background`) through
:func:`engines.images.init_image.read_init_image`, which refuses FIFOs,
devices, empty files, files over 64 MB and images over 64 megapixels
without blocking: a bad file can never freeze the window.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QSize, Qt, Signal
from PySide6.QtGui import QImage, QImageReader, QPixmap
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
)

from desktop.workers.background import run_in_background
from engines.diffusion.init_image import INIT_IMAGE_SUFFIXES
from engines.errors import EngineError, ErrorKind

DROP_HEIGHT = 132  # tall enough for a square thumbnail that reads as one
THUMB_DECODE = QSize(512, 512)  # the thumbnail is decoded at most this large, whatever the image's size
EMPTY_TEXT = "Drop an image here to start from it"


class DropArea(QLabel):
    """A box that takes an image file dropped onto it, and shows the chosen one scaled to fit (never clipped)."""

    file_dropped = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("InitImageDrop")
        self.setAcceptDrops(True)
        self.setAlignment(Qt.AlignCenter)
        self.setWordWrap(True)
        # Ignored width: the thumbnail never widens the panel; a fixed height that it is scaled into.
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        self.setFixedHeight(DROP_HEIGHT)
        self.setStyleSheet(
            "QLabel#InitImageDrop { border: 1px dashed palette(mid); border-radius: 8px;"
            " color: palette(placeholder-text); padding: 6px; }"
        )
        self._thumbnail: QImage | None = None

    def show_thumbnail(self, image: QImage | None) -> None:
        self._thumbnail = image
        self._rescale()

    def _rescale(self) -> None:
        if self._thumbnail is None or self._thumbnail.isNull():
            return
        room = self.contentsRect().size() - QSize(12, 12)  # the stylesheet's padding
        if room.width() < 8 or room.height() < 8:
            return
        self.setPixmap(QPixmap.fromImage(self._thumbnail).scaled(room, Qt.KeepAspectRatio, Qt.SmoothTransformation))

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._rescale()

    @staticmethod
    def _image_path(event) -> str | None:
        for url in event.mimeData().urls():
            path = url.toLocalFile()
            if path and Path(path).suffix.lower() in INIT_IMAGE_SUFFIXES:
                return path
        return None

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if self._image_path(event):
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        if self._image_path(event):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        path = self._image_path(event)
        if path:
            event.acceptProposedAction()
            self.file_dropped.emit(path)


def load_init_image(path: str) -> tuple[bytes, tuple[int, int], QImage]:
    """On a pool thread: the file's bytes (checked), its size and a small thumbnail (QImage is thread-safe)."""
    from engines.images.init_image import read_init_image  # the GGUF package behind it loads on first use

    data = read_init_image(path)
    buffer = QBuffer()
    buffer.setData(QByteArray(data))
    buffer.open(QIODevice.ReadOnly)
    reader = QImageReader(buffer)
    size = reader.size()
    if size.isValid() and (size.width() > THUMB_DECODE.width() or size.height() > THUMB_DECODE.height()):
        reader.setScaledSize(size.scaled(THUMB_DECODE, Qt.KeepAspectRatio))
    thumbnail = reader.read()
    if thumbnail.isNull():
        raise EngineError(ErrorKind.BAD_INPUT, f"{Path(path).name} is not an image Atelier can read "
                                               f"({reader.errorString()}); use a PNG, JPEG or WebP file.")
    full = (size.width(), size.height()) if size.isValid() else (thumbnail.width(), thumbnail.height())
    return data, full, thumbnail


class InitImageGroup(QGroupBox):
    """Holds the encoded starting image (``image_bytes``) and the strength."""

    changed = Signal()  # an image was set or cleared
    problem = Signal(str)  # a file that could not be used, in words

    def __init__(self, parent=None) -> None:
        super().__init__("Image to image (optional)", parent)
        self.image_bytes: bytes | None = None
        self.image_size: tuple[int, int] | None = None
        self.image_name = ""
        self._thumbnail: QImage | None = None
        self._task = None  # the read in flight, if any
        layout = QVBoxLayout(self)
        self.drop = DropArea()
        self.drop.file_dropped.connect(self.set_image_file)
        layout.addWidget(self.drop)
        buttons = QHBoxLayout()
        self.choose_button = QPushButton("Choose…")
        self.choose_button.clicked.connect(self._choose)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear)
        buttons.addWidget(self.choose_button)
        buttons.addWidget(self.clear_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        strength_row = QHBoxLayout()
        strength_row.addWidget(QLabel("Strength"))
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(5, 100)
        self.spin = QDoubleSpinBox()
        self.spin.setRange(0.05, 1.0)
        self.spin.setSingleStep(0.05)
        self.spin.setDecimals(2)
        self.spin.setMinimumWidth(64)
        self.slider.valueChanged.connect(lambda v: self.spin.setValue(v / 100))
        self.spin.valueChanged.connect(lambda v: self.slider.setValue(round(v * 100)))
        strength_row.addWidget(self.slider, 1)
        strength_row.addWidget(self.spin)
        layout.addLayout(strength_row)
        self.note = QLabel("Strength is how much of the image is repainted: low keeps it, 1.0 replaces it.")
        self.note.setObjectName("Muted")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self.set_strength(0.75)
        self._show()

    @property
    def loading(self) -> bool:
        return self._task is not None

    def strength(self) -> float:
        return round(self.spin.value(), 2)

    def set_strength(self, value: float) -> None:
        self.spin.setValue(max(0.05, min(1.0, float(value))))

    def set_image_file(self, path: str):
        """Start reading the image at ``path`` off the GUI thread; ``changed`` or ``problem`` follows.

        Returns the background task (tests wait on the signals, not on it).
        """
        if self._task is not None:
            self._task.cancel()  # a newer choice wins
        name = Path(path).name
        self.drop.show_thumbnail(None)
        self.drop.clear()
        self.drop.setText(f"Reading {name}…")
        self.clear_button.setEnabled(True)  # Clear also drops a read that is taking long
        self._task = run_in_background(lambda: load_init_image(path),
                                       on_done=lambda loaded: self._loaded(name, loaded),
                                       on_error=lambda error: self._failed(name, error))
        return self._task

    def _loaded(self, name: str, loaded) -> None:
        self._task = None
        self.image_bytes, self.image_size, self._thumbnail = loaded
        self.image_name = name
        self._show(self._thumbnail)
        self.changed.emit()

    def _failed(self, name: str, error) -> None:
        self._task = None
        self._show(self._thumbnail if self.image_bytes is not None else None)  # the previous image stays
        self.problem.emit(getattr(error, "message", None) or str(error))

    def clear(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.image_bytes = None
        self.image_size = None
        self.image_name = ""
        self._thumbnail = None
        self._show()
        self.changed.emit()

    def _choose(self) -> None:
        patterns = " ".join(f"*{suffix}" for suffix in INIT_IMAGE_SUFFIXES)
        path, _ = QFileDialog.getOpenFileName(self, "Choose a starting image", str(Path.home()),
                                              f"Images ({patterns})")
        if path:
            self.set_image_file(path)

    def _show(self, thumbnail: QImage | None = None) -> None:
        self.clear_button.setEnabled(thumbnail is not None)
        if thumbnail is None:
            self.drop.show_thumbnail(None)
            self.drop.clear()
            self.drop.setText(EMPTY_TEXT)
            self.drop.setToolTip("")
            return
        self.drop.show_thumbnail(thumbnail)
        width, height = self.image_size or (thumbnail.width(), thumbnail.height())
        self.drop.setToolTip(f"{self.image_name} · {width}×{height}")
