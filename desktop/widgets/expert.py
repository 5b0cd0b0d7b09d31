"""Simple and advanced mode: expert controls stay out of a new user's way until asked for.

About fourteen controls (top-k, min-p, repeat penalty, seed, threads, GPU
layers, the context cache type, the sampler, precision, backend...) face a
first-time user who only wants to chat or make a picture. As LM Studio's
modes do, Atelier starts in *simple* mode, which hides them, and remembers
the choice (``Settings.advanced_controls``; the switch is on the Settings
page and in a "Show all settings" link where controls are hidden).

A page marks its expert controls once, after laying them out::

    mark_advanced(self.top_k, self.min_p, seed_row, load_box)

and the rest is automatic: a marked widget in a form row (or in a layout
that is a form row's field) is hidden with its label; a layout stands for
every widget in it; a widget hidden for another reason (a page's own
logic) is never shown by switching to advanced mode. The mode lives on the application
object (:func:`expert_mode`), so every window and page follows one switch.
Until someone sets it (the app does at start-up, from the settings),
everything is shown: a page built alone, as in a test, looks as it always did.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QFormLayout, QLabel, QLayout, QWidget

MARK = "atelierAdvanced"  # a Qt property on each marked widget
HIDDEN_BY_MODE = "atelierHiddenBySimpleMode"  # set on the widgets simple mode hid (only those come back)


class ExpertMode(QObject):
    """The application's one switch; ``changed(advanced)`` after every change."""

    changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ExpertMode")
        self._advanced = True

    @property
    def advanced(self) -> bool:
        return self._advanced

    def set_advanced(self, advanced: bool) -> None:
        advanced = bool(advanced)
        if advanced == self._advanced:
            return
        self._advanced = advanced
        for widget in QApplication.allWidgets():
            if widget.property(MARK):
                _apply(widget, advanced)
        self.changed.emit(advanced)


def expert_mode() -> ExpertMode:
    """The application's switch (made on first use, advanced until set)."""
    app = QApplication.instance()
    mode = app.findChild(ExpertMode, "ExpertMode")
    if mode is None:
        mode = ExpertMode(app)
    return mode


def mark_advanced(*items: QWidget | QLayout) -> None:
    """Mark widgets (or every widget in a layout, such as a form row's) as expert controls; apply the mode now."""
    advanced = expert_mode().advanced
    for widget in _widgets(items):
        widget.setProperty(MARK, True)
        _apply(widget, advanced)


def _widgets(items) -> list[QWidget]:
    found = []
    for item in items:
        if isinstance(item, QWidget):
            found.append(item)
        elif isinstance(item, QLayout):
            children = [item.itemAt(i) for i in range(item.count())]
            found += _widgets([c.widget() or c.layout() for c in children if c.widget() or c.layout()])
    return found


class HiddenControlsNote(QLabel):
    """A small "expert controls are hidden · Show all settings" link, visible in simple mode only."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__('Simple mode: expert controls are hidden. <a href="advanced">Show all settings</a>', parent)
        self.setObjectName("Muted")
        self.setWordWrap(True)
        self.linkActivated.connect(lambda _link: expert_mode().set_advanced(True))
        mode = expert_mode()
        mode.changed.connect(self._follow)  # a bound slot: disconnected when the label goes away
        self._follow(mode.advanced)

    def _follow(self, advanced: bool) -> None:
        self.setVisible(not advanced)


def _apply(widget: QWidget, advanced: bool) -> None:
    if advanced:
        if widget.property(HIDDEN_BY_MODE):
            widget.setProperty(HIDDEN_BY_MODE, False)
            _set_visible(widget, True)
        return
    if not widget.isHidden():
        widget.setProperty(HIDDEN_BY_MODE, True)
        _set_visible(widget, False)


def _set_visible(widget: QWidget, visible: bool) -> None:
    """Hide or show *widget*, with its label when it is a field of a form."""
    form, row = _form_row(widget)
    if form is not None:
        form.setRowVisible(row, visible)
    else:
        widget.setVisible(visible)


def _form_row(widget: QWidget) -> tuple[QFormLayout | None, int]:
    """The form and row whose field is *widget*, or a layout holding it (a "Seed: [x] Random [123]" row)."""
    parent = widget.parentWidget()
    if parent is None:
        return None, -1
    layouts = [parent.layout(), *parent.findChildren(QFormLayout)]
    for layout in layouts:
        if not isinstance(layout, QFormLayout):
            continue
        row, _role = layout.getWidgetPosition(widget)
        if row >= 0:
            return layout, row
        for row in range(layout.rowCount()):
            field = layout.itemAt(row, QFormLayout.ItemRole.FieldRole)
            if field is not None and field.layout() is not None and _holds(field.layout(), widget):
                return layout, row
    return None, -1


def _holds(layout: QLayout, widget: QWidget) -> bool:
    for index in range(layout.count()):
        item = layout.itemAt(index)
        if item.widget() is widget or (item.layout() is not None and _holds(item.layout(), widget)):
            return True
    return False
