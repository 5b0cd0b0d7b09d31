"""What the Images page shows instead of the image when the image engine cannot run here."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget


class EngineMissingPanel(QFrame):
    """A centred heading, the reason in a banner, and a word on what still works."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("EngineMissing")
        row = QHBoxLayout(self)
        box = QWidget()  # wrapped labels need a width to wrap at: at most 640 px, centred
        box.setMaximumWidth(640)
        box.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        row.addStretch(1)
        row.addWidget(box, 100)
        row.addStretch(1)
        layout = QVBoxLayout(box)
        layout.addStretch(1)
        heading = QLabel("Images need the image engine")
        heading.setObjectName("PageTitle")
        heading.setAlignment(Qt.AlignCenter)
        layout.addWidget(heading)
        self.message = QLabel()
        self.message.setObjectName("Banner")
        self.message.setWordWrap(True)
        self.message.setAlignment(Qt.AlignCenter)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.message)
        hint = QLabel("Making images needs PyTorch and diffusers (or ONNX Runtime) next to Atelier. "
                      "Your gallery below still works.")
        hint.setObjectName("Muted")
        hint.setWordWrap(True)
        hint.setAlignment(Qt.AlignCenter)
        layout.addWidget(hint)
        layout.addStretch(1)

    def set_reason(self, reason: str) -> None:
        self.message.setText(f"The image engine is not installed: {reason}")
