"""Small pieces the parts of the Images page's controls share: the note labels and their looks.

Kept apart so each part of :class:`desktop.pages.images.controls.ImageControls`
(model, size, sampling, LoRAs, speed options) draws its notes the same way.
"""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QPlainTextEdit

from engines.diffusion.types import ImageRequest

DEFAULTS = ImageRequest(prompt="")


def set_role(label: QLabel, name: str) -> None:
    """Switch a label between the theme's looks ("Muted", "Banner") and repaint it."""
    if label.objectName() != name:
        label.setObjectName(name)
        label.style().unpolish(label)
        label.style().polish(label)


def note(text: str = "", role: str = "Muted") -> QLabel:
    """A wrapping note, hidden while it says nothing."""
    label = QLabel(text)
    label.setObjectName(role)
    label.setWordWrap(True)
    label.setVisible(bool(text))
    return label


def plain_text(widget: QPlainTextEdit) -> str:
    return widget.toPlainText().strip()
