"""The Images page's LoRA picker: the installed LoRAs, several at once, each with a weight.

The list comes from the library (LoRAs are recorded with the family they
were trained for: :mod:`engines.library.probes.lora`), each shown with that
family. A LoRA for another family than the chosen model is disabled in the
list, with the engine's own sentence as its tooltip
(:mod:`engines.library.lora_choice`); one already picked when the model
changes stays in the list, marked, and blocks Generate with that sentence
instead of vanishing: the user decides. Each picked LoRA has a slider and a
spin box for its weight (the spin box reaches the engine's full ±10, the
slider the useful ±2) and a remove button. :meth:`specs` is what the
request carries; :meth:`restore` puts a stored image's LoRAs back and names
the ones no longer installed.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.pages.images.control_helpers import note, set_role
from engines.diffusion.types import MAX_LORA_WEIGHT, MAX_LORAS, LoraSpec
from engines.library.lora_choice import ONNX_NOTE, LoraChoice, find_installed, lora_choices

NONE_INSTALLED = ("No LoRAs installed yet. Add a LoRA's .safetensors file on the Models page (Add file…) or put "
                  "it in the models folder; it is listed here with the model family it was trained for.")
SLIDER_STEPS = 100  # slider units per 1.0 of weight
SLIDER_RANGE = 2.0


class _WeightSlider(QSlider):
    """A slider that takes the mouse wheel only when focused, so scrolling the panel never changes a weight."""

    def wheelEvent(self, event) -> None:  # noqa: N802
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()  # the scroll area around it scrolls instead


class LoraRow(QWidget):
    """One picked LoRA: its name and family, its weight (slider and spin box, kept in step), and remove."""

    changed = Signal()
    remove_requested = Signal(object)

    def __init__(self, choice: LoraChoice, weight: float = 1.0, parent=None) -> None:
        super().__init__(parent)
        self.choice = choice
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.setSpacing(2)
        top = QHBoxLayout()
        self.name = QLabel(choice.label)
        self.name.setToolTip(choice.path)
        top.addWidget(self.name, 1)
        self.remove_button = QToolButton()
        self.remove_button.setText("✕")
        self.remove_button.setToolTip(f"Remove the LoRA {choice.name}")
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self))
        top.addWidget(self.remove_button)
        layout.addLayout(top)
        bottom = QHBoxLayout()
        self.slider = _WeightSlider(Qt.Horizontal)
        self.slider.setRange(int(-SLIDER_RANGE * SLIDER_STEPS), int(SLIDER_RANGE * SLIDER_STEPS))
        self.slider.setFocusPolicy(Qt.StrongFocus)
        self.slider.setToolTip("The LoRA's weight: 1 as trained, 0 off, negative to push away from it")
        self.spin = QDoubleSpinBox()
        self.spin.setRange(-MAX_LORA_WEIGHT, MAX_LORA_WEIGHT)
        self.spin.setSingleStep(0.05)
        self.spin.setDecimals(2)
        self.spin.setToolTip(self.slider.toolTip())
        self.spin.setValue(weight)
        self._sync_slider(weight)
        self.slider.valueChanged.connect(self._slider_moved)
        self.spin.valueChanged.connect(self._spin_changed)
        bottom.addWidget(self.slider, 1)
        bottom.addWidget(self.spin)
        layout.addLayout(bottom)
        self.problem = note(role="Banner")
        layout.addWidget(self.problem)

    def weight(self) -> float:
        return round(self.spin.value(), 2)

    def set_weight(self, weight: float) -> None:
        self.spin.setValue(weight)

    def spec(self) -> LoraSpec:
        return LoraSpec(self.choice.path, self.weight(), self.choice.name)

    def set_problem(self, text: str) -> None:
        self.problem.setText(text)
        self.problem.setVisible(bool(text))

    def _sync_slider(self, weight: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(round(max(-SLIDER_RANGE, min(SLIDER_RANGE, weight)) * SLIDER_STEPS))
        self.slider.blockSignals(False)

    def _slider_moved(self, value: int) -> None:
        self.spin.setValue(value / SLIDER_STEPS)  # the spin box emits changed

    def _spin_changed(self, value: float) -> None:
        self._sync_slider(value)
        self.changed.emit()


class LoraPicker(QGroupBox):
    """The "LoRAs" group of the Images page's controls; ``changed`` after every pick, weight or removal."""

    changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__("LoRAs", parent)
        self._choices: list[LoraChoice] = []
        self._onnx = False
        layout = QVBoxLayout(self)
        self.add_combo = QComboBox()
        self.add_combo.setPlaceholderText("Add a LoRA…")
        self.add_combo.setToolTip("LoRAs from the library; the ones for another model family are greyed out")
        self.add_combo.activated.connect(self._picked)
        layout.addWidget(self.add_combo)
        self.rows_layout = QVBoxLayout()
        self.rows_layout.setSpacing(4)
        layout.addLayout(self.rows_layout)
        self.note = note()
        layout.addWidget(self.note)
        self.rows: list[LoraRow] = []
        self._show_choices()

    # ---- what is installed -------------------------------------------------

    def set_installed(self, models, folder, model_name: str, onnx: bool = False) -> None:
        """Judge the library's LoRAs (``models``: InstalledModel records) against the chosen model's ``folder``."""
        self._onnx = onnx
        self._choices = lora_choices(models, folder, model_name)
        by_id = {c.id: c for c in self._choices}
        for row in self.rows:  # a picked LoRA is judged again for the new model, and stays
            row.choice = by_id.get(row.choice.id, row.choice)
            row.set_problem(self._row_problem(row.choice))
        self._show_choices()

    def choices(self) -> list[LoraChoice]:
        return list(self._choices)

    def _row_problem(self, choice: LoraChoice) -> str:
        if choice.id not in {c.id for c in self._choices}:
            return f"The LoRA {choice.name} is no longer in the library."
        return choice.problem

    def _show_choices(self) -> None:
        combo = self.add_combo
        combo.clear()
        picked = {row.choice.id for row in self.rows}
        model: QStandardItemModel = combo.model()
        for choice in self._choices:
            combo.addItem(choice.label, choice.id)
            item = model.item(combo.count() - 1)
            if choice.problem:
                item.setEnabled(False)
                item.setToolTip(choice.problem)
            elif choice.id in picked:
                item.setEnabled(False)
                item.setToolTip("Already picked: change its weight below")
            else:
                item.setToolTip(choice.path)
        combo.setCurrentIndex(-1)
        combo.setEnabled(bool(self._choices) and len(self.rows) < MAX_LORAS)
        if not self._choices:
            text, role = NONE_INSTALLED, "Muted"
        elif self._onnx and self.rows:
            text, role = f"{ONNX_NOTE}: choose the PyTorch (or Auto) backend, or remove them.", "Banner"
        else:
            text, role = "", "Muted"
        self.note.setText(text)
        set_role(self.note, role)
        self.note.setVisible(bool(text))

    # ---- picking -----------------------------------------------------------

    def _picked(self, index: int) -> None:
        choice_id = self.add_combo.itemData(index)
        choice = next((c for c in self._choices if c.id == choice_id), None)
        if choice is not None:
            self.add(choice)

    def add(self, choice: LoraChoice, weight: float = 1.0) -> LoraRow | None:
        """Pick ``choice`` (once: picking it again changes nothing); None when it cannot be picked."""
        if choice.problem or any(row.choice.id == choice.id for row in self.rows) or len(self.rows) >= MAX_LORAS:
            return None
        row = LoraRow(choice, weight)
        row.changed.connect(self.changed)
        row.remove_requested.connect(self.remove)
        self.rows.append(row)
        self.rows_layout.addWidget(row)
        self._show_choices()
        self.changed.emit()
        return row

    def add_by_id(self, lora_id: str, weight: float = 1.0) -> LoraRow | None:
        choice = next((c for c in self._choices if c.id == lora_id), None)
        return self.add(choice, weight) if choice is not None else None

    def remove(self, row: LoraRow) -> None:
        if row in self.rows:
            self.rows.remove(row)
            row.setParent(None)
            row.deleteLater()
            self._show_choices()
            self.changed.emit()

    def clear(self) -> None:
        for row in list(self.rows):
            self.rows.remove(row)
            row.setParent(None)
            row.deleteLater()
        self._show_choices()

    # ---- the request ---------------------------------------------------------

    def specs(self) -> tuple[LoraSpec, ...]:
        return tuple(row.spec() for row in self.rows)

    def problems(self) -> list[str]:
        """What stops a run with the picked LoRAs, in words (the model's family, a file gone, ONNX)."""
        found = [self._row_problem(row.choice).rstrip(".") for row in self.rows if self._row_problem(row.choice)]
        if self._onnx and any(row.weight() != 0 for row in self.rows):  # a weight of 0 is not even loaded
            found.append(f"{ONNX_NOTE}: choose the PyTorch (or Auto) backend, or remove the LoRAs")
        return found

    def restore(self, loras) -> list[str]:
        """Pick LoRAs back with their weights; notes for the ones not installed or not fitting the model.

        ``loras``: a stored request's (dicts or LoraSpecs: path, weight, name), or the page's remembered ones
        (``{"id", "weight"}``: engines.settings.RememberedLora), found by their library id.
        """
        self.clear()
        notes = []
        for lora in loras:
            lora = lora if isinstance(lora, dict) else vars(lora)
            weight = float(lora.get("weight", 1.0))
            lora_id = lora.get("id")
            choice = (next((c for c in self._choices if c.id == lora_id), None) if lora_id
                      else find_installed(lora, self._choices))
            label = lora.get("name") or lora_id or (str(lora.get("path") or "").replace("\\", "/").rsplit("/", 1)[-1]
                                                    .rsplit(".", 1)[0])
            if choice is None:
                notes.append(f"the LoRA {label} (weight {weight:g}) is not installed, so it was left out")
            elif choice.problem:
                notes.append(f"the LoRA {choice.name} was left out: {choice.problem[0].lower()}{choice.problem[1:]}"
                             .rstrip("."))
            else:
                self.add(choice, weight)
        self.changed.emit()
        return notes
