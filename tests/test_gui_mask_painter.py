"""The mask painter under pytest-qt: brush, eraser, size, invert and clear give the mask pixels they should,
and the Images page sends the painted mask and the outpaint margins with an Inpaint run.

Strokes are made with real mouse events on the canvas (press, move with
the button held, release), scaled from screen to image pixels by the
canvas itself; the mask is read back as the PNG the request carries.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent
from PySide6.QtWidgets import QApplication

from desktop.pages.images.mask_painter import ERASER, MaskPainter
from tests.fixtures.fake_image_host import small_png
from tests.fixtures.images_page import engine_ready, fill, page, run, workspace  # noqa: F401  (fixtures)

pytestmark = pytest.mark.gui


def mask_of(painter: MaskPainter) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(painter.mask_png())) as image:
        return np.asarray(image.convert("L"))


def drag(canvas, start: QPointF, end: QPointF, steps: int = 4) -> None:
    """A left-button drag on the canvas, in image pixels, sent as real mouse events."""
    rect = canvas.image_rect()
    scale = rect.width() / canvas.image.width()

    def screen(point: QPointF) -> QPointF:
        return QPointF(rect.x() + point.x() * scale, rect.y() + point.y() * scale)

    def send(kind, point, buttons) -> None:
        pos = screen(point)
        event = QMouseEvent(kind, pos, canvas.mapToGlobal(pos), Qt.LeftButton, buttons, Qt.NoModifier)
        QApplication.sendEvent(canvas, event)

    send(QEvent.MouseButtonPress, start, Qt.LeftButton)
    for i in range(1, steps + 1):
        t = i / steps
        send(QEvent.MouseMove, start + (end - start) * t, Qt.LeftButton)
    send(QEvent.MouseButtonRelease, end, Qt.NoButton)


@pytest.fixture
def painter(qtbot):
    widget = MaskPainter()
    qtbot.addWidget(widget)
    widget.resize(400, 300)  # the 200×100 image is drawn at 2× (400×200), centred
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_image(QImage(200, 100, QImage.Format_RGB32))
    return widget


def test_brush_eraser_size_invert_and_clear_make_the_expected_mask(qtbot, painter):
    canvas = painter.canvas
    assert mask_of(painter).shape == (100, 200) and not mask_of(painter).any() and not painter.painted

    painter.size_spin.setValue(20)
    drag(canvas, QPointF(20, 50), QPointF(180, 50))
    mask = mask_of(painter)
    assert painter.painted and set(np.unique(mask)) == {0, 255}  # a mask is repaint or keep, nothing between
    assert mask[50, 20:181].all() and mask[41:60, 100].all()  # the stroke, 20 px wide
    assert not mask[:38, :].any() and not mask[63:, :].any()

    painter.set_tool(ERASER)
    assert painter.eraser_button.isChecked() and not painter.brush_button.isChecked()
    painter.size_spin.setValue(10)
    drag(canvas, QPointF(100, 30), QPointF(100, 70))
    mask = mask_of(painter)
    assert not mask[45:56, 96:105].any()  # erased across the stroke
    assert mask[50, 20:90].all() and mask[50, 110:181].all()  # the rest of it stays

    qtbot.mouseClick(painter.invert_button, Qt.LeftButton)
    inverted = mask_of(painter)
    assert np.array_equal(inverted, 255 - mask)

    qtbot.mouseClick(painter.clear_button, Qt.LeftButton)
    assert not mask_of(painter).any() and not painter.painted


def test_inpaint_sends_the_painted_mask_and_the_margins(qtbot, page, tmp_path):
    from tests.test_gui_images import choose_init_image

    panel, mode = page.inpaint.panel, page.inpaint
    qtbot.mouseClick(mode.open_button, Qt.LeftButton)  # no starting image yet: the banner says where to get one
    assert not mode.showing and page.banner.text() == (
        "Choose a starting image under “Image to image” first: the mask is painted over it.")

    source = tmp_path / "start.png"
    small_png(64, 64, 5).save(source)
    assert choose_init_image(qtbot, page, source) == []
    fill(page, steps=4)
    qtbot.mouseClick(mode.open_button, Qt.LeftButton)
    assert mode.showing and panel.painter.canvas.image.size().toTuple() == (64, 64)

    qtbot.mouseClick(panel.inpaint_button, Qt.LeftButton)  # nothing painted: the request's own sentence
    assert not page.running and page.banner.text() == (
        "Cannot inpaint: the mask is blank (all black): there is nothing to repaint. Paint the area to repaint "
        "in white.")

    panel.painter.size_spin.setValue(8)
    drag(panel.painter.canvas, QPointF(16, 16), QPointF(48, 16))
    panel.outpaint.set_values((0, 16, 8, 0))
    qtbot.mouseClick(panel.inpaint_button, Qt.LeftButton)
    assert page.running and not mode.showing  # the image forms in the view; the mask stays for the next try
    qtbot.waitUntil(lambda: not page.running, timeout=10000)
    request = page.host.requests[-1]
    assert request.init_image == source.read_bytes() and request.outpaint == (0, 16, 8, 0)
    assert request.mask == panel.painter.mask_png() and mask_of(panel.painter)[16, 16:49].all()
    assert page.gallery.list()[0].request["inpaint"] is True

    # A plain Generate is never an inpainting by surprise, and it shows the image forming, not the painter.
    qtbot.mouseClick(mode.open_button, Qt.LeftButton)
    assert mode.showing and mask_of(panel.painter)[16, 16:49].all()  # the same image: the mask is kept
    run(qtbot, page)
    assert not mode.showing
    assert page.host.requests[-1].mask is None and page.host.requests[-1].outpaint == (0, 0, 0, 0)
    page.controls.init_group.clear()
    qtbot.mouseClick(mode.open_button, Qt.LeftButton)
    assert not mode.showing
