"""The "Model" part of the Images page's controls: which image model, which backend, its recommended settings.

A mixin of :class:`desktop.pages.images.controls.ImageControls` (so the
page and the tests keep one object with every control and method), kept in
its own module because choosing a model is its own job: it inspects the
folder (JSON only, no torch), says what the model is, starts a newly chosen
model at its native size and offers a distilled model's few-step settings.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from desktop.pages.images.control_helpers import DEFAULTS, note
from engines.diffusion.types import MAX_SIZE, MIN_SIZE

IMAGE_FORMATS = ("diffusers", "onnx")
BACKENDS = (("Auto", "auto"), ("PyTorch", "torch"), ("ONNX Runtime", "onnx"))
NO_MODELS_NOTE = "No image models yet. Download SD-Turbo from the Models page, or add a diffusers folder."


class ModelChoice:
    """Builds the model box and keeps ``_models``, ``_folder`` and ``_native_size`` in step with the choice."""

    def _build_model_box(self) -> tuple[QGroupBox, QHBoxLayout]:
        """The "Model" group and its backend row (the caller marks that row advanced)."""
        model_box = QGroupBox("Model")
        model_layout = QVBoxLayout(model_box)
        self.model_combo = QComboBox()
        self.model_combo.setPlaceholderText("No image models yet")
        self.model_combo.currentIndexChanged.connect(self._model_index_changed)
        model_layout.addWidget(self.model_combo)
        self.model_note = note()
        model_layout.addWidget(self.model_note)
        row = QHBoxLayout()
        self.add_button = QPushButton("Add model folder…")
        self.add_button.clicked.connect(self.add_model_requested)
        self.unload_button = QPushButton("Unload")
        self.unload_button.setToolTip("Stop the image engine and give the model's memory back")
        self.unload_button.clicked.connect(self.unload_requested)
        row.addWidget(self.add_button)
        row.addWidget(self.unload_button)
        row.addStretch(1)
        model_layout.addLayout(row)
        backend_row = QHBoxLayout()
        backend_row.addWidget(QLabel("Backend"))
        self.backend_combo = QComboBox()
        for label, value in BACKENDS:
            self.backend_combo.addItem(label, value)
        self.backend_combo.setToolTip("Auto picks what runs best here. ONNX Runtime needs an ONNX model folder.")
        backend_row.addWidget(self.backend_combo, 1)
        model_layout.addLayout(backend_row)
        self.recommend_button = QPushButton("Use the recommended settings")
        self.recommend_button.setToolTip("Steps, guidance and sampler that suit this distilled model")
        self.recommend_button.clicked.connect(self.use_recommended)
        self.recommend_button.hide()
        model_layout.addWidget(self.recommend_button)
        return model_box, backend_row

    def set_models(self, models, selected_id: str | None = None) -> None:
        """Offer the installed image models; keeps the current choice when it is still there."""
        current = selected_id or self.current_model_id()
        self._models = [m for m in models if m.format in IMAGE_FORMATS]
        self._updating = True
        self.model_combo.clear()
        for model in self._models:
            self.model_combo.addItem(model.name, model.id)
            if not model.exists:
                self.model_combo.setItemData(self.model_combo.count() - 1, f"Missing: {model.path}", Qt.ToolTipRole)
        index = self.model_combo.findData(current) if current else -1
        self.model_combo.setCurrentIndex(index if index >= 0 else (0 if self._models else -1))
        self._updating = False
        self.model_combo.setEnabled(bool(self._models))
        self._model_index_changed(self.model_combo.currentIndex(), emit=False)

    def current_model(self):
        model_id = self.current_model_id()
        return next((m for m in self._models if m.id == model_id), None)

    def current_model_id(self) -> str | None:
        return self.model_combo.currentData() if self.model_combo.currentIndex() >= 0 else None

    def select_model(self, model_id: str) -> bool:
        index = self.model_combo.findData(model_id)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        return index >= 0

    def current_folder(self):
        """The chosen model's inspected folder (``engines.model_folder.ModelFolder``), None when it could not be."""
        return self._folder

    def _model_index_changed(self, _index: int, emit: bool = True) -> None:
        if self._updating:
            return
        model = self.current_model()
        self._folder = None
        self._native_size = None
        if model is None:
            self.model_note.setText(NO_MODELS_NOTE)
        else:
            self._inspect(model)
        self.model_note.show()
        self.unload_button.setEnabled(model is not None)
        distilled = bool(self._folder and self._folder.distilled)
        self.recommend_button.setVisible(distilled)
        if distilled and self.steps_spin.value() == DEFAULTS.steps and self.guidance_spin.value() == DEFAULTS.guidance:
            self.use_recommended()  # untouched defaults would give a burnt image on a Turbo model
        if model is not None and model.id != self._sized_for:
            self._sized_for = model.id
            self._use_native_size()
        self._update_size_note()
        self._update_sampler_note()
        self._model_folder_changed()
        self._refresh_problems()
        if emit:
            self.model_changed.emit(model.id if model else "")
            self.changed.emit()

    def _model_folder_changed(self) -> None:
        """Hook for the parts that depend on the model's family (LoRAs, tiny VAE); nothing by default."""

    def _inspect(self, model) -> None:
        from engines.model_folder import inspect_model_folder  # cheap: reads JSON, no torch
        from engines.errors import EngineError

        if not model.exists:
            self.model_note.setText(f"The model folder is missing: {model.path}")
            return
        try:
            folder = inspect_model_folder(model.path)
        except EngineError as exc:
            self.model_note.setText(exc.message)
            return
        self._folder = folder
        self._native_size = folder.native_size
        family = "SDXL" if folder.family == "sdxl" else "Stable Diffusion"
        kind = "ONNX" if folder.kind == "onnx" else "diffusers"
        parts = [f"{family} · {kind}", f"trained at {folder.native_size}×{folder.native_size}"]
        if folder.distilled:
            parts.append("distilled (LCM/Turbo): 1–8 steps")
        self.model_note.setText(" · ".join(parts))

    def _use_native_size(self) -> None:
        """A newly chosen model starts at the square size it was trained at (not with an init image)."""
        native = self._native_size
        if native and MIN_SIZE <= native <= MAX_SIZE and native % 8 == 0 and not self.init_group.image_bytes:
            self.set_size(native, native)

    def set_native_size(self, size: int | None) -> None:
        """The loaded model's training resolution (from the engine), for the size hint."""
        self._native_size = size or self._native_size
        self._update_size_note()

    def use_recommended(self) -> None:
        """Few steps, little guidance: what LCM and Turbo models are made for."""
        if self._folder is None or not self._folder.distilled:
            return
        lcm = "lcm" in self._folder.name.lower() or self._folder.scheduler_config.get("_class_name") == "LCMScheduler"
        self.steps_spin.setValue(4 if lcm else 2)
        self.guidance_spin.setValue(1.0 if lcm else 0.0)
        self.sampler_combo.setCurrentText("LCM" if lcm else "Euler a")
        native = self._folder.native_size
        if not self.init_group.image_bytes and MIN_SIZE <= native <= MAX_SIZE:
            self.set_size(native, native)
