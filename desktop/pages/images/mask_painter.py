"""The mask painter: paint over the init image where the model should repaint (inpainting).

The mask is a greyscale image of exactly the init image's size, white
where the model repaints and black where the image is kept, which is what
:class:`engines.diffusion.types.ImageRequest` takes as ``mask``. Strokes
are drawn in the image's own pixels (the brush size is in image pixels
too), so the mask does not depend on how large the window is; on screen
the mask is a translucent red layer over the image, scaled to fit.

Tools: brush (paint white), eraser (paint black), size, invert, clear.
:meth:`MaskCanvas.stroke` is the one way a stroke is drawn: the mouse
calls it, and so can a test.
"""

from __future__ import annotations

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import (
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

BRUSH, ERASER = "brush", "eraser"
DEFAULT_BRUSH = 32  # image pixels
MAX_BRUSH = 512
OVERLAY = QColor(230, 40, 60, 130)  # the painted area, seen through: red, about half opaque
EMPTY_TEXT = "Choose a starting image under “Image to image”, then paint here where the model should repaint."


class MaskCanvas(QWidget):
    """The init image scaled to fit, the mask over it, and the mouse painting into the mask."""

    changed = Signal()  # the mask was painted, erased, inverted or cleared

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("MaskCanvas")
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Ignored)
        self.setMinimumSize(160, 160)
        self.setCursor(Qt.CrossCursor)
        self.image: QImage | None = None
        self.mask: QImage | None = None  # Format_Grayscale8, the image's size: 255 = repaint
        self.tool = BRUSH
        self.brush_size = DEFAULT_BRUSH
        self._last: QPointF | None = None
        self._overlay: QImage | None = None  # the mask in translucent red, as drawn over the image
        self.changed.connect(self._mask_changed)

    def _mask_changed(self) -> None:
        self._overlay = None
        self.update()

    # ---- the image and the mask ----------------------------------------------

    def set_image(self, image: QImage | None) -> None:
        """Paint over ``image`` from a blank mask (None: nothing to paint on)."""
        self.image = image.convertToFormat(QImage.Format_RGB32) if image is not None and not image.isNull() else None
        self.mask = None
        if self.image is not None:
            self.mask = QImage(self.image.size(), QImage.Format_Grayscale8)
            self.mask.fill(0)
        self.changed.emit()

    def stroke(self, points: list[QPointF]) -> None:
        """Draw a stroke through ``points`` (image pixels) with the current tool and brush size."""
        if self.mask is None or not points:
            return
        painter = QPainter(self.mask)
        painter.setRenderHint(QPainter.Antialiasing, False)  # a mask is either repainted or kept
        colour = QColor(255, 255, 255) if self.tool == BRUSH else QColor(0, 0, 0)
        painter.setPen(QPen(colour, self.brush_size, Qt.SolidLine, Qt.RoundCap, Qt.RoundJoin))
        if len(points) == 1:
            painter.drawPoint(points[0])
        for start, end in zip(points, points[1:]):
            painter.drawLine(start, end)
        painter.end()
        self.changed.emit()

    def invert(self) -> None:
        if self.mask is not None:
            self.mask.invertPixels()
            self.changed.emit()

    def clear(self) -> None:
        if self.mask is not None:
            self.mask.fill(0)
            self.changed.emit()

    @property
    def painted(self) -> bool:
        """Whether any pixel of the mask is set to repaint."""
        if self.mask is None:
            return False
        return any(b for b in self._mask_bytes())

    def _mask_bytes(self) -> bytes:
        """The mask's rows without Qt's line padding (one byte per pixel)."""
        width, height, stride = self.mask.width(), self.mask.height(), self.mask.bytesPerLine()
        raw = bytes(self.mask.constBits())[: stride * height]
        return b"".join(raw[row * stride: row * stride + width] for row in range(height))

    def mask_png(self) -> bytes | None:
        """The mask as PNG bytes (what the request carries), or None when there is no image."""
        if self.mask is None:
            return None
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.WriteOnly)
        self.mask.save(buffer, "PNG")
        buffer.close()
        return bytes(data)

    # ---- screen ↔ image ------------------------------------------------------

    def image_rect(self) -> QRectF:
        """Where the image is drawn: scaled to fit the widget, keeping its aspect, centred."""
        if self.image is None:
            return QRectF()
        scale = min(self.width() / self.image.width(), self.height() / self.image.height())
        w, h = self.image.width() * scale, self.image.height() * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def to_image(self, pos: QPointF) -> QPointF:
        rect = self.image_rect()
        scale = self.image.width() / rect.width() if rect.width() else 1.0
        return QPointF((pos.x() - rect.x()) * scale, (pos.y() - rect.y()) * scale)

    # ---- Qt events -----------------------------------------------------------

    def paintEvent(self, event) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().alternateBase())
        if self.image is None:
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(self.rect().adjusted(12, 12, -12, -12), Qt.AlignCenter | Qt.TextWordWrap, EMPTY_TEXT)
            return
        rect = self.image_rect()
        painter.setRenderHint(QPainter.SmoothPixmapTransform, True)
        painter.drawImage(rect, self.image)
        if self._overlay is None:  # rebuilt only after the mask changed, not at every repaint
            self._overlay = QImage(self.mask.size(), QImage.Format_ARGB32)
            self._overlay.fill(QColor(OVERLAY.red(), OVERLAY.green(), OVERLAY.blue()))
            self._overlay.setAlphaChannel(self.mask)
        painter.setOpacity(OVERLAY.alphaF())
        painter.drawImage(rect, self._overlay)
        painter.end()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.LeftButton and self.image is not None:
            self._last = self.to_image(event.position())
            self.stroke([self._last])

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self._last is not None and event.buttons() & Qt.LeftButton:
            point = self.to_image(event.position())
            self.stroke([self._last, point])
            self._last = point

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        self._last = None


class MaskPainter(QWidget):
    """The canvas with its tools: brush, eraser, size, invert and clear."""

    changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.canvas = MaskCanvas()
        self.canvas.changed.connect(self.changed)
        tools = QHBoxLayout()
        self.brush_button = QPushButton("Brush")
        self.brush_button.setToolTip("Paint where the model should repaint")
        self.eraser_button = QPushButton("Eraser")
        self.eraser_button.setToolTip("Take areas out of the mask: they are kept as they are")
        group = QButtonGroup(self)
        for button, tool in ((self.brush_button, BRUSH), (self.eraser_button, ERASER)):
            button.setCheckable(True)
            group.addButton(button)
            button.clicked.connect(lambda _=False, t=tool: self.set_tool(t))
            tools.addWidget(button)
        self.brush_button.setChecked(True)
        for button in (self.brush_button, self.eraser_button):  # the tool in hand reads as pressed in every theme
            button.setStyleSheet("QPushButton:checked { background: palette(highlight); "
                                 "color: palette(highlighted-text); }")
        tools.addWidget(QLabel("Size"))
        self.size_spin = QSpinBox()
        self.size_spin.setRange(1, MAX_BRUSH)
        self.size_spin.setSuffix(" px")
        self.size_spin.setValue(DEFAULT_BRUSH)
        self.size_spin.setToolTip("The brush's width, in pixels of the image")
        self.size_spin.valueChanged.connect(self._set_size)
        tools.addWidget(self.size_spin)
        self.invert_button = QPushButton("Invert")
        self.invert_button.setToolTip("Repaint everything except what is painted now")
        self.invert_button.clicked.connect(self.canvas.invert)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Clear the mask")
        self.clear_button.clicked.connect(self.canvas.clear)
        tools.addWidget(self.invert_button)
        tools.addWidget(self.clear_button)
        tools.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(tools)
        layout.addWidget(self.canvas, 1)

    def set_tool(self, tool: str) -> None:
        self.canvas.tool = tool
        (self.brush_button if tool == BRUSH else self.eraser_button).setChecked(True)

    def _set_size(self, value: int) -> None:
        self.canvas.brush_size = value

    def set_image(self, image: QImage | None) -> None:
        self.canvas.set_image(image)

    def mask_png(self) -> bytes | None:
        return self.canvas.mask_png()

    @property
    def painted(self) -> bool:
        return self.canvas.painted
