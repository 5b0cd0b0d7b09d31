"""The mouse wheel changes a spin box or combo box only when it has the focus; otherwise the panel scrolls."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QComboBox, QDoubleSpinBox, QScrollArea, QSpinBox, QVBoxLayout, QWidget

from desktop.widgets.wheel_guard import WheelGuard, install_wheel_guard

pytestmark = pytest.mark.gui


def wheel(widget: QWidget, notches: int = -1) -> None:
    """A real wheel event (one notch down by default) at the widget's centre, sent through the application."""
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre)), QPoint(0, 0), QPoint(0, 120 * notches),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


@pytest.fixture
def panel(qtbot):
    """A scrolling settings panel, like the chat and image panels: a guidance spin box in the middle."""
    install_wheel_guard(QApplication.instance())
    area = QScrollArea()
    area.setWidgetResizable(True)
    body = QWidget()
    layout = QVBoxLayout(body)
    area.guidance = QDoubleSpinBox()
    area.guidance.setRange(0, 30)
    area.guidance.setValue(7.0)
    area.batch = QSpinBox()
    area.batch.setRange(1, 16)
    area.batch.setValue(2)
    area.sampler = QComboBox()
    area.sampler.addItems(["Euler", "Euler a", "DDIM", "LCM"])
    for index in range(30):
        layout.addWidget(QSpinBox() if index % 2 else QComboBox())
        if index == 10:
            layout.addWidget(area.guidance)
            layout.addWidget(area.batch)
            layout.addWidget(area.sampler)
    area.setWidget(body)
    area.resize(300, 300)
    qtbot.addWidget(area)
    area.show()
    qtbot.waitExposed(area)
    area.setFocus()
    return area


def test_the_wheel_over_an_unfocused_spin_box_changes_nothing_and_scrolls_the_panel(panel):
    bar = panel.verticalScrollBar()
    assert bar.maximum() > 0 and bar.value() == 0
    assert not panel.guidance.hasFocus()
    wheel(panel.guidance)
    wheel(panel.batch)
    assert panel.guidance.value() == 7.0 and panel.batch.value() == 2
    assert bar.value() > 0  # the panel scrolled instead


def test_the_wheel_over_an_unfocused_combo_box_changes_nothing(panel):
    panel.sampler.setCurrentIndex(1)
    wheel(panel.sampler)
    wheel(panel.sampler)
    assert panel.sampler.currentText() == "Euler a"
    assert panel.verticalScrollBar().value() > 0


def test_a_focused_control_still_takes_the_wheel(panel, qtbot):
    panel.guidance.setFocus()
    qtbot.waitUntil(panel.guidance.hasFocus)
    bar = panel.verticalScrollBar()
    before = bar.value()
    wheel(panel.guidance, notches=1)
    assert panel.guidance.value() == pytest.approx(8.0)
    assert bar.value() == before


def test_controls_get_strong_focus_so_the_wheel_never_focuses_them(panel):
    for control in (panel.guidance, panel.batch, panel.sampler):
        assert control.focusPolicy() == Qt.FocusPolicy.StrongFocus
    later = QSpinBox(panel.widget())  # made after the guard was installed: polished when shown
    later.show()
    assert later.focusPolicy() == Qt.FocusPolicy.StrongFocus


def test_the_guard_is_installed_once():
    app = QApplication.instance()
    first = install_wheel_guard(app)
    assert install_wheel_guard(app) is first
    assert len(app.findChildren(WheelGuard)) == 1
