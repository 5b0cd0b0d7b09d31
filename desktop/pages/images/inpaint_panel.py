"""The inpaint/outpaint panel that takes the image view's place: the mask painter, the margins, and Inpaint.

:class:`InpaintMode` hooks it into the Images page: an "Inpaint /
outpaint…" button over the view shows the panel over the init image, and
its Inpaint button runs the page's own generate with the request's
``mask`` and ``outpaint`` added (:meth:`InpaintPanel.edit`). A mask that is painted nowhere is still sent
when nothing is outpainted, so the request's own check says "the mask is
blank" in the banner instead of an inpainting that silently does nothing.
"""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QObject, Signal
from PySide6.QtGui import QImage, QImageReader
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from desktop.pages.images.mask_painter import MaskPainter
from desktop.pages.images.outpaint_controls import OutpaintControls


def upright_image(data: bytes) -> QImage | None:
    """The encoded image turned upright by its EXIF orientation, as the engine turns it (None if unreadable)."""
    buffer = QBuffer()
    buffer.setData(QByteArray(data))
    buffer.open(QIODevice.ReadOnly)
    reader = QImageReader(buffer)
    reader.setAutoTransform(True)
    image = reader.read()
    return None if image.isNull() else image


class InpaintPanel(QWidget):
    """Paint the mask over the init image, choose margins, and press Inpaint (or go back to the image)."""

    inpaint_requested = Signal()
    close_requested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._source: bytes | None = None  # the init image the mask belongs to
        self.painter = MaskPainter()
        self.outpaint = OutpaintControls()
        note = QLabel("Paint in red what the model should repaint; everything else is kept exactly as it is.")
        note.setObjectName("Muted")
        note.setWordWrap(True)
        self.inpaint_button = QPushButton("Inpaint")
        self.inpaint_button.setObjectName("Primary")
        self.inpaint_button.setToolTip("Repaint the masked area and the outpaint margins (uses the prompt and "
                                       "the settings on the left)")
        self.inpaint_button.clicked.connect(self.inpaint_requested)
        self.back_button = QPushButton("Back to the image")
        self.back_button.clicked.connect(self.close_requested)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.back_button)
        buttons.addWidget(self.inpaint_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(note)
        layout.addWidget(self.painter, 1)
        layout.addWidget(self.outpaint)
        layout.addLayout(buttons)

    def set_source(self, data: bytes | None) -> None:
        """Paint over the encoded init image ``data``; the mask is kept while the image stays the same."""
        if data == self._source and (data is None or self.painter.canvas.image is not None):
            return
        self._source = data
        self.painter.set_image(upright_image(data) if data is not None else None)

    def edit(self) -> dict:
        """The request's ``mask`` and ``outpaint`` for what is painted and chosen now."""
        margins = self.outpaint.values()
        painted = self.painter.painted
        mask = self.painter.mask_png() if painted or not any(margins) else None
        return {"mask": mask, "outpaint": margins}


class InpaintMode(QObject):
    """How the Images page gets inpainting: a button over the view, the panel in the view's place, and the edit.

    The page keeps its one ``generate``; this object only adds the mask and
    margins to the request of a run its Inpaint button started
    (:meth:`apply`), so a plain Generate is never an inpainting by surprise.
    """

    def __init__(self, stack, view, parent=None) -> None:
        super().__init__(parent)
        self.stack, self.view = stack, view
        self.panel = InpaintPanel()
        stack.addWidget(self.panel)
        self.open_button = QPushButton("Inpaint / outpaint…")
        self.open_button.setToolTip("Paint a mask over the starting image (Image to image) and repaint only that "
                                    "part, or extend the canvas")
        self.bar = QWidget()  # the button, right-aligned above the view
        row = QHBoxLayout(self.bar)
        row.setContentsMargins(0, 0, 0, 0)
        row.addStretch(1)
        row.addWidget(self.open_button)
        self._page = None
        self._editing = False  # a run the Inpaint button started: apply() adds the mask and margins

    def wire(self, page, show_banner) -> None:
        """Connect to the page: its init image, its generate, and ``show_banner`` for what stops an edit."""
        self._page, self._show_banner = page, show_banner
        self.open_button.clicked.connect(self.open)
        self.panel.close_requested.connect(self.close)
        self.panel.inpaint_requested.connect(self.inpaint)
        page.controls.init_group.changed.connect(self._init_changed)
        page.controls.generate_requested.connect(self.close)  # a plain Generate shows its image forming

    @property
    def showing(self) -> bool:
        return self.stack.currentWidget() is self.panel

    def open(self) -> bool:
        """Show the painter over the init image; without one, the banner says where to choose it."""
        page = self._page
        data = page.controls.init_group.image_bytes
        if data is None:
            self._show_banner("Choose a starting image under “Image to image” first: the mask is painted over it.")
            return False
        if not page.engine_available or page.running:
            return False
        self.panel.set_source(data)
        self.stack.setCurrentWidget(self.panel)
        return True

    def close(self) -> None:
        if self.showing:
            self.stack.setCurrentWidget(self.view)

    def inpaint(self) -> bool:
        """Run the page's generate with the mask and margins; the view shows the image forming, the mask stays."""
        self._editing = True
        try:
            started = self._page.generate()
        finally:
            self._editing = False
        if started:
            self.close()
        return started

    def apply(self, request):
        """(request, None) for the page's generate: with the mask and margins when Inpaint asked; (None, problem)."""
        if not self._editing:
            return request, None
        request = dataclasses.replace(request, **self.panel.edit())
        problems = request.validate()
        if problems:
            return None, "Cannot inpaint: " + "; ".join(problems) + "."
        return request, None

    def _init_changed(self) -> None:
        data = self._page.controls.init_group.image_bytes
        if data is None:
            self.close()
        elif self.showing:
            self.panel.set_source(data)  # a new starting image starts a new mask
