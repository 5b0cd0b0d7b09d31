"""The image-to-image group: a drop area for the starting image and the strength."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_INIT_BYTES = 64 * 1024 * 1024


class DropArea(QLabel):
    """A box that takes an image file dropped onto it (or shows the chosen one)."""

    file_dropped = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("InitImageDrop")
        self.setAcceptDrops(True)
        self.setAlignment(Qt.AlignCenter)
        self.setWordWrap(True)
        self.setMinimumHeight(96)
        self.setStyleSheet(
            "QLabel#InitImageDrop { border: 1px dashed palette(mid); border-radius: 8px;"
            " color: palette(placeholder-text); padding: 6px; }"
        )

    @staticmethod
    def _image_path(event) -> str | None:
        for url in event.mimeData().urls():
            path = url.toLocalFile()
            if path and Path(path).suffix.lower() in IMAGE_SUFFIXES:
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


class InitImageGroup(QGroupBox):
    """Holds the encoded starting image (``image_bytes``) and the strength."""

    changed = Signal()
    problem = Signal(str)  # a file that could not be used, in words

    def __init__(self, parent=None) -> None:
        super().__init__("Image to image (optional)", parent)
        self.image_bytes: bytes | None = None
        self.image_size: tuple[int, int] | None = None
        self.image_name = ""
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

    def strength(self) -> float:
        return round(self.spin.value(), 2)

    def set_strength(self, value: float) -> None:
        self.spin.setValue(max(0.05, min(1.0, float(value))))

    def set_image_file(self, path: str) -> bool:
        """Use the image at ``path``; False (and a ``problem`` signal) when it is not a readable image."""
        file = Path(path)
        try:
            if file.stat().st_size > MAX_INIT_BYTES:
                self.problem.emit(f"{file.name} is larger than 64 MB; choose a smaller image.")
                return False
            data = file.read_bytes()
        except OSError as exc:
            self.problem.emit(f"Could not read {file.name}: {exc.strerror or exc}")
            return False
        image = QImage.fromData(data)
        if image.isNull():
            self.problem.emit(f"{file.name} is not an image Atelier can read (use PNG, JPEG or WebP).")
            return False
        self.image_bytes = data
        self.image_size = (image.width(), image.height())
        self.image_name = file.name
        self._show(image)
        self.changed.emit()
        return True

    def clear(self) -> None:
        self.image_bytes = None
        self.image_size = None
        self.image_name = ""
        self._show()
        self.changed.emit()

    def _choose(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a starting image", str(Path.home()), "Images (*.png *.jpg *.jpeg *.webp *.bmp)"
        )
        if path:
            self.set_image_file(path)

    def _show(self, image: QImage | None = None) -> None:
        self.clear_button.setEnabled(image is not None)
        if image is None:
            self.drop.clear()
            self.drop.setText("Drop an image here to start from it")
            self.drop.setToolTip("")
            return
        pixmap = QPixmap.fromImage(image).scaled(220, 120, Qt.KeepAspectRatio, Qt.SmoothTransformation)
        self.drop.setPixmap(pixmap)
        self.drop.setToolTip(f"{self.image_name} · {image.width()}×{image.height()}")
