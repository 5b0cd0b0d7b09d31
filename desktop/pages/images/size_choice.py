"""The "Size" part of the Images page's controls: presets, width and height, and what is wrong with them.

A mixin of :class:`desktop.pages.images.controls.ImageControls`, in its own
module because the size has its own rules: multiples of 8 (of 64 for some
ONNX graphs), and a hint when it is far from what the model was trained at.
"""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QLabel, QSpinBox, QVBoxLayout

from desktop.pages.images.control_helpers import note, set_role
from engines.diffusion.types import MAX_SIZE, MIN_SIZE

SIZE_PRESETS = ((512, 512), (768, 768), (512, 768), (768, 512), (1024, 1024))
CUSTOM = "Custom"


class SizeChoice:
    def _build_size_box(self) -> QGroupBox:
        size_box = QGroupBox("Size")
        size_layout = QVBoxLayout(size_box)
        self.preset_combo = QComboBox()
        for width, height in SIZE_PRESETS:
            self.preset_combo.addItem(f"{width} × {height}", f"{width}x{height}")
        self.preset_combo.addItem(CUSTOM, "")
        self.preset_combo.currentIndexChanged.connect(self._preset_changed)
        size_layout.addWidget(self.preset_combo)
        dims = QHBoxLayout()
        self.width_spin, self.height_spin = self._size_spin(), self._size_spin()
        dims.addWidget(QLabel("W"))
        dims.addWidget(self.width_spin, 1)
        dims.addWidget(QLabel("H"))
        dims.addWidget(self.height_spin, 1)
        size_layout.addLayout(dims)
        self.size_note = note()
        size_layout.addWidget(self.size_note)
        return size_box

    @staticmethod
    def _size_spin() -> QSpinBox:
        box = QSpinBox()
        box.setRange(MIN_SIZE, MAX_SIZE)
        box.setSingleStep(8)
        box.setMinimumWidth(72)
        return box

    def set_size(self, width: int, height: int) -> None:
        self.width_spin.setValue(width)
        self.height_spin.setValue(height)

    def _preset_changed(self, index: int) -> None:
        size = self.preset_combo.itemData(index)
        if size and not self._updating:
            self.set_size(*(int(v) for v in size.split("x")))

    def _size_changed(self) -> None:
        index = self.preset_combo.findData(f"{self.width_spin.value()}x{self.height_spin.value()}")
        self._updating, previous = True, self._updating
        self.preset_combo.setCurrentIndex(index if index >= 0 else self.preset_combo.count() - 1)
        self._updating = previous
        self._update_size_note()

    def _update_size_note(self) -> None:
        width, height = self.width_spin.value(), self.height_spin.value()
        warnings = [f"{label} {value} is not a multiple of 8; try {round(value / 8) * 8}."
                    for label, value in (("Width", width), ("Height", height)) if value % 8]
        multiple = self._folder.size_multiple if self._folder is not None and self._folder.kind == "onnx" else 8
        if not warnings and multiple > 8 and (width % multiple or height % multiple):
            warnings.append(f"The ONNX version of this model needs multiples of {multiple}.")
        hints = []
        native = self._native_size
        if native and not warnings and (max(width, height) > 1.5 * native or max(width, height) < 0.5 * native):
            hints.append(f"This model was trained at {native}×{native}; sizes far from that tend to repeat "
                         "subjects or lose detail.")
        self.size_note.setText(" ".join(warnings or hints))
        set_role(self.size_note, "Banner" if warnings else "Muted")
        self.size_note.setVisible(bool(warnings or hints))
