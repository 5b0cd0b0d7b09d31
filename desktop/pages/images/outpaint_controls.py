"""Outpainting: how many pixels to add on each side of the init image before it is painted in.

Four spin boxes in steps of 8 (the engines need multiples of 8); the values
become :attr:`engines.diffusion.types.ImageRequest.outpaint`, in the order
left, right, top, bottom. The limits on the result's size are the
request's own checks, so the GUI and the CLI say the same sentence.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QGridLayout, QGroupBox, QLabel, QSpinBox

from engines.diffusion.inpaint import OUTPAINT_SIDES

MAX_MARGIN = 1024  # per side; the result's own limit (2048 a side) is the request's check
STEP = 8


class OutpaintControls(QGroupBox):
    """Left, right, top and bottom margins in pixels (0: that side is not extended)."""

    changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__("Outpaint: extend the canvas", parent)
        grid = QGridLayout(self)
        self.spins: dict[str, QSpinBox] = {}
        for index, side in enumerate(OUTPAINT_SIDES):
            spin = QSpinBox()
            spin.setRange(0, MAX_MARGIN)
            spin.setSingleStep(STEP)
            spin.setSuffix(" px")
            spin.setToolTip(f"Pixels to add on the {side} (multiples of {STEP}); the new area is painted in")
            spin.valueChanged.connect(self.changed)
            grid.addWidget(QLabel(side.capitalize()), 0, index * 2)
            grid.addWidget(spin, 0, index * 2 + 1)
            self.spins[side] = spin

    def values(self) -> tuple[int, int, int, int]:
        return tuple(self.spins[side].value() for side in OUTPAINT_SIDES)

    def set_values(self, values) -> None:
        for side, value in zip(OUTPAINT_SIDES, values):
            self.spins[side].setValue(int(value))
