"""Spin boxes and combo boxes take the mouse wheel only when they have the focus.

Qt lets the wheel change any spin box or combo box under the pointer, so
scrolling a settings panel changes whatever value passes beneath it
(guidance went from 7.0 to 5.5, a batch from 2 to 6, unnoticed). One
application-wide event filter, installed once at start-up, fixes it for
every page, present and future:

* every spin box and combo box gets ``Qt.StrongFocus`` when it is polished,
  so the wheel no longer gives it the focus (a click or Tab still does);
* a wheel event over one that has no focus goes to the nearest scroll area
  around it instead, so the panel scrolls as the user meant; with no scroll
  area around it, the event is dropped.

A focused control still takes the wheel: a user who clicked into a value
and scrolls means to change it.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QAbstractScrollArea, QAbstractSpinBox, QApplication, QComboBox, QWidget

_GUARDED = (QAbstractSpinBox, QComboBox)
_WHEEL = QEvent.Type.Wheel
_POLISH = QEvent.Type.Polish


class WheelGuard(QObject):
    """The event filter; :func:`install_wheel_guard` installs one on the application."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        kind = event.type()
        if kind != _WHEEL and kind != _POLISH:  # the cheap test first: this sees every event of the app
            return False
        if not isinstance(watched, _GUARDED):
            return False
        if kind == _POLISH:
            watched.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            return False
        if watched.hasFocus():
            return False
        scroll_area = _scroll_area_around(watched)
        if scroll_area is not None:
            _forward(event, watched, scroll_area.viewport())
        event.accept()
        return True  # the control never sees it


def install_wheel_guard(app: QApplication) -> WheelGuard:
    """Install the guard on *app* once (a second call returns the first guard)."""
    existing = app.findChild(WheelGuard)
    if existing is not None:
        return existing
    guard = WheelGuard(app)
    app.installEventFilter(guard)
    for widget in app.allWidgets():  # widgets polished before the guard existed
        if isinstance(widget, _GUARDED):
            widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
    return guard


def _scroll_area_around(widget: QWidget) -> QAbstractScrollArea | None:
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea) and not isinstance(parent, _GUARDED):
            return parent
        parent = parent.parentWidget()
    return None


def _forward(event: QWheelEvent, source: QWidget, target: QWidget) -> None:
    """Send a copy of the wheel event to *target*, at the same place on the screen."""
    position = target.mapFromGlobal(event.globalPosition())
    copy = QWheelEvent(position, event.globalPosition(), event.pixelDelta(), event.angleDelta(), event.buttons(),
                       event.modifiers(), event.phase(), event.inverted(), event.source())
    QApplication.sendEvent(target, copy)
