"""Content that scrolls when the window is too short for it: the one way pages and panels build it.

Every page is usable at 1024×640, so a tall panel sits in a scroll area:
frameless, named ``PanelScroll`` for the theme (no border, no background of
its own), its content as wide as the area. It scrolls down, and sideways only
where a page asks (a column that may be wider than a small window).
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QScrollArea, QWidget


def scroll_area(body: QWidget, *, sideways: bool = False) -> QScrollArea:
    """``body`` in the app's scroll area; ``sideways``: a horizontal scroll bar when ``body`` is wider."""
    scroll = QScrollArea()
    scroll.setObjectName("PanelScroll")
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.NoFrame)
    if not sideways:
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    scroll.setWidget(body)
    return scroll


def transparent_body(name: str) -> QWidget:
    """A plain widget named ``name`` that lets the page's background show through, to put in a scroll area."""
    body = QWidget()
    body.setObjectName(name)
    body.setStyleSheet(f"QWidget#{name} {{ background: transparent; }}")
    return body
