"""The left column of the Images page: model, prompt, size, sampling, seed, img2img, Generate.

It only shows and edits values: :meth:`ImageControls.request` turns them
into an :class:`ImageRequest`, :meth:`problems` says in words what is wrong
with them (and the shown problems follow every edit, so none goes stale),
:meth:`apply_settings` puts a stored image's settings back, and
:meth:`prefs` / :meth:`apply_prefs` are what the page remembers across
restarts. A newly chosen model starts at its native size.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.pages.images.init_image import InitImageGroup
from desktop.widgets.expert import HiddenControlsNote, mark_advanced
from desktop.widgets.scroll_area import scroll_area
from engines.diffusion.schedulers import scheduler_problems
from engines.diffusion.types import MAX_BATCH, MAX_SEED, MAX_SIZE, MIN_SIZE, SCHEDULER_NAMES, ImageLoadSpec, ImageRequest

IMAGE_FORMATS = ("diffusers", "onnx")
BACKENDS = (("Auto", "auto"), ("PyTorch", "torch"), ("ONNX Runtime", "onnx"))
SIZE_PRESETS = ((512, 512), (768, 768), (512, 768), (768, 512), (1024, 1024))
CUSTOM = "Custom"
NO_MODELS_NOTE = "No image models yet. Download SD-Turbo from the Models page, or add a diffusers folder."
DEFAULTS = ImageRequest(prompt="")


def _set_role(label: QLabel, name: str) -> None:
    """Switch a label between the theme's looks ("Muted", "Banner") and repaint it."""
    if label.objectName() != name:
        label.setObjectName(name)
        label.style().unpolish(label)
        label.style().polish(label)


def _note(text: str = "", role: str = "Muted") -> QLabel:
    label = QLabel(text)
    label.setObjectName(role)
    label.setWordWrap(True)
    label.setVisible(bool(text))
    return label


def _text(widget: QPlainTextEdit) -> str:
    return widget.toPlainText().strip()


class ImageControls(QWidget):
    generate_requested = Signal()
    cancel_requested = Signal()
    add_model_requested = Signal()
    unload_requested = Signal()
    model_changed = Signal(str)  # installed model id ("" for none)
    changed = Signal()  # any value the user can edit changed (the page remembers them)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setMinimumWidth(320)
        self.setMaximumWidth(420)
        self._models: list = []
        self._folder = None  # ModelFolder of the chosen model, when it could be inspected
        self._native_size: int | None = None
        self._sized_for: str | None = None  # the model whose native size the size fields were set to
        self._updating = False
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        body = QFrame()
        body.setObjectName("Panel")
        scroll = scroll_area(body)
        outer.addWidget(scroll, 1)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(12, 12, 12, 12)
        self.scroll = scroll

        # ---- model
        model_box = QGroupBox("Model")
        model_layout = QVBoxLayout(model_box)
        self.model_combo = QComboBox()
        self.model_combo.setPlaceholderText("No image models yet")
        self.model_combo.currentIndexChanged.connect(self._model_index_changed)
        model_layout.addWidget(self.model_combo)
        self.model_note = _note()
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
        layout.addWidget(model_box)

        # ---- prompt
        prompt_box = QGroupBox("Prompt")
        prompt_layout = QVBoxLayout(prompt_box)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Describe the image, e.g. a lighthouse on a cliff at dawn, oil painting")
        self.prompt.setFixedHeight(84)
        self.prompt.setTabChangesFocus(True)
        prompt_layout.addWidget(self.prompt)
        negative_label = QLabel("Negative prompt")
        negative_label.setObjectName("Muted")
        prompt_layout.addWidget(negative_label)
        self.negative = QPlainTextEdit()
        self.negative.setPlaceholderText("What to avoid, e.g. blurry, text, watermark")
        self.negative.setFixedHeight(56)
        self.negative.setTabChangesFocus(True)
        prompt_layout.addWidget(self.negative)
        layout.addWidget(prompt_box)

        # ---- size
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
        self.size_note = _note()
        size_layout.addWidget(self.size_note)
        layout.addWidget(size_box)

        # ---- sampling
        sampling_box = QGroupBox("Sampling")
        form = QFormLayout(sampling_box)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignLeft | Qt.AlignVCenter)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 150)
        self.guidance_spin = QDoubleSpinBox()
        self.guidance_spin.setRange(0.0, 30.0)
        self.guidance_spin.setSingleStep(0.5)
        self.guidance_spin.setDecimals(1)
        self.guidance_spin.setToolTip("Guidance (CFG scale): how closely to follow the prompt. Turbo models use 0.")
        self.sampler_combo = QComboBox()
        self.sampler_combo.addItems(SCHEDULER_NAMES)
        self.sampler_combo.currentTextChanged.connect(self._update_sampler_note)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Guidance (CFG)", self.guidance_spin)
        form.addRow("Sampler", self.sampler_combo)
        self.sampler_note = _note("LCM is for LCM and Turbo models only.")
        form.addRow(self.sampler_note)
        seed_row = QHBoxLayout()
        self.random_seed = QCheckBox("Random")
        self.seed_spin = QDoubleSpinBox()  # a QSpinBox stops at 2**31 - 1; seeds go to 2**32 - 1
        self.seed_spin.setDecimals(0)
        self.seed_spin.setRange(0, MAX_SEED)
        self.seed_spin.setMinimumWidth(110)
        self.random_seed.toggled.connect(lambda on: self.seed_spin.setEnabled(not on))
        seed_row.addWidget(self.random_seed)
        seed_row.addWidget(self.seed_spin, 1)
        form.addRow("Seed", seed_row)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, MAX_BATCH)
        self.batch_spin.setToolTip("Images made one after another, with seeds seed, seed+1, …")
        form.addRow("Batch count", self.batch_spin)
        layout.addWidget(sampling_box)
        # Simple mode (desktop/widgets/expert.py) keeps model, prompt, size, steps, guidance and batch.
        mark_advanced(backend_row, self.sampler_combo, self.sampler_note, seed_row)
        self.hidden_note = HiddenControlsNote()
        layout.addWidget(self.hidden_note)

        # ---- img2img
        self.init_group = InitImageGroup()
        self.init_group.changed.connect(self._update_size_note)
        layout.addWidget(self.init_group)
        layout.addStretch(1)

        # ---- always visible: problems and the buttons
        footer = QFrame()
        footer.setObjectName("Panel")
        foot = QVBoxLayout(footer)
        foot.setContentsMargins(12, 8, 12, 12)
        self.validation = _note(role="Banner")
        foot.addWidget(self.validation)
        buttons = QHBoxLayout()
        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("Primary")
        self.generate_button.setMinimumHeight(34)
        self.generate_button.setToolTip("Make the image (Ctrl+Enter)")
        self.generate_button.clicked.connect(self.generate_requested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setMinimumHeight(34)
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop after the current step (Esc); images already finished are kept")
        self.cancel_button.clicked.connect(self.cancel_requested)
        buttons.addWidget(self.generate_button, 1)
        buttons.addWidget(self.cancel_button)
        foot.addLayout(buttons)
        outer.addWidget(footer)

        self.width_spin.valueChanged.connect(self._size_changed)
        self.height_spin.valueChanged.connect(self._size_changed)
        self.reset()
        for signal in (self.prompt.textChanged, self.negative.textChanged, self.width_spin.valueChanged,
                       self.height_spin.valueChanged, self.steps_spin.valueChanged, self.guidance_spin.valueChanged,
                       self.sampler_combo.currentIndexChanged, self.random_seed.toggled, self.seed_spin.valueChanged,
                       self.batch_spin.valueChanged, self.backend_combo.currentIndexChanged, self.init_group.changed,
                       self.init_group.spin.valueChanged):
            signal.connect(self._edited)
        for combo in body.findChildren(QComboBox):
            # A long entry ("DPM++ 2M Karras", a model's long name) elides instead of widening the column.
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        self._fit_width()

    def _fit_width(self) -> None:
        """As wide as the fields need in this font (it differs between systems), so the scroll area never clips."""
        scroll = self.scroll
        needed = (scroll.widget().minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width()
                  + 2 * scroll.frameWidth())
        self.setMinimumWidth(max(320, min(needed, self.maximumWidth())))

    def _edited(self, *_args) -> None:
        self._refresh_problems()
        self.changed.emit()

    @staticmethod
    def _size_spin() -> QSpinBox:
        box = QSpinBox()
        box.setRange(MIN_SIZE, MAX_SIZE)
        box.setSingleStep(8)
        box.setMinimumWidth(72)
        return box

    def reset(self) -> None:
        """The defaults of a fresh request."""
        self.set_size(DEFAULTS.width, DEFAULTS.height)
        self.steps_spin.setValue(DEFAULTS.steps)
        self.guidance_spin.setValue(DEFAULTS.guidance)
        self.sampler_combo.setCurrentText(DEFAULTS.scheduler)
        self.random_seed.setChecked(True)
        self.seed_spin.setEnabled(False)
        self.batch_spin.setValue(1)
        self.init_group.set_strength(DEFAULTS.strength)
        self._update_sampler_note()

    # ---- models ----------------------------------------------------------

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
        self._refresh_problems()
        if emit:
            self.model_changed.emit(model.id if model else "")
            self.changed.emit()

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

    # ---- size ------------------------------------------------------------

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
        _set_role(self.size_note, "Banner" if warnings else "Muted")
        self.size_note.setVisible(bool(warnings or hints))

    def _update_sampler_note(self) -> None:
        distilled = bool(self._folder and self._folder.distilled)
        if self.sampler_combo.currentText() == "LCM" and self._folder is not None and not distilled:
            self.sampler_note.setText("LCM only works with LCM and Turbo models; this model would come out blurry.")
            _set_role(self.sampler_note, "Banner")
        else:
            self.sampler_note.setText("LCM is for LCM and Turbo models only.")
            _set_role(self.sampler_note, "Muted")

    # ---- the request -----------------------------------------------------

    def seed(self) -> int | None:
        return None if self.random_seed.isChecked() else int(round(self.seed_spin.value()))

    def request(self) -> ImageRequest:
        init = self.init_group.image_bytes
        return ImageRequest(
            prompt=_text(self.prompt),
            negative_prompt=_text(self.negative),
            width=self.width_spin.value(),
            height=self.height_spin.value(),
            steps=self.steps_spin.value(),
            guidance=round(self.guidance_spin.value(), 2),
            scheduler=self.sampler_combo.currentText(),
            seed=self.seed(),
            batch_count=self.batch_spin.value(),
            init_image=init,
            strength=self.init_group.strength() if init is not None else DEFAULTS.strength,
            preview_every=1,
        )

    def load_spec(self) -> ImageLoadSpec | None:
        model = self.current_model()
        return ImageLoadSpec(model.path, backend=self.backend_combo.currentData()) if model else None

    def problems(self) -> list[str]:
        """Everything that stops this request, in words (empty when it can run)."""
        problems = []
        model = self.current_model()
        if model is None:
            problems.append("choose an image model first (download SD-Turbo on the Models page, or add a folder)")
        elif not model.exists:
            problems.append(f"the model folder {model.path} is missing")
        request = self.request()
        problems += request.validate()
        if self._folder is not None and request.scheduler in SCHEDULER_NAMES:
            problems += scheduler_problems(request.scheduler, self._folder.distilled, self._folder.name)
        return problems

    def show_problems(self, problems: list[str]) -> None:
        if problems:
            text = "Can’t generate yet: " + "; ".join(problems) + "."
            self.validation.setText(text[0].upper() + text[1:])
        self.validation.setVisible(bool(problems))

    def _refresh_problems(self) -> None:
        """Once problems are shown, keep them true: fixing one (choosing a model...) removes it at once."""
        if self.validation.isVisibleTo(self) and not self._updating:
            self.show_problems(self.problems())

    def set_running(self, running: bool, can_generate: bool = True) -> None:
        self.generate_button.setEnabled(can_generate and not running)
        self.cancel_button.setEnabled(running)
        for widget in (self.model_combo, self.backend_combo, self.add_button, self.unload_button):
            widget.setEnabled(not running)
        if not running:
            self.model_combo.setEnabled(bool(self._models))
            self.unload_button.setEnabled(self.current_model() is not None)

    # ---- remembered across restarts ----------------------------------------

    def prefs(self) -> dict:
        """The values the page remembers across restarts (the fields of ``engines.settings.ImagePrefs``)."""
        return {
            "model_id": self.current_model_id(),
            "backend": self.backend_combo.currentData(),
            "prompt": self.prompt.toPlainText(),
            "negative_prompt": self.negative.toPlainText(),
            "width": self.width_spin.value(),
            "height": self.height_spin.value(),
            "steps": self.steps_spin.value(),
            "guidance": round(self.guidance_spin.value(), 2),
            "sampler": self.sampler_combo.currentText(),
            "random_seed": self.random_seed.isChecked(),
            "seed": int(round(self.seed_spin.value())),
        }

    def apply_prefs(self, prefs) -> None:
        """Show remembered values (an ``ImagePrefs``). The size is restored only for the model it was used with:
        any other model starts at its own native size."""
        if prefs.model_id:
            self.select_model(prefs.model_id)
        index = self.backend_combo.findData(prefs.backend)
        if index >= 0:
            self.backend_combo.setCurrentIndex(index)
        self.prompt.setPlainText(prefs.prompt)
        self.negative.setPlainText(prefs.negative_prompt)
        if prefs.model_id and prefs.model_id == self.current_model_id():
            self.set_size(prefs.width, prefs.height)
        self.steps_spin.setValue(prefs.steps)
        self.guidance_spin.setValue(prefs.guidance)
        if prefs.sampler in SCHEDULER_NAMES:
            self.sampler_combo.setCurrentText(prefs.sampler)
        self.random_seed.setChecked(prefs.random_seed)
        self.seed_spin.setValue(prefs.seed)
        self.seed_spin.setEnabled(not prefs.random_seed)

    # ---- "use these settings again" ----------------------------------------

    def apply_settings(self, settings: dict, model_id: str | None = None) -> list[str]:
        """Put a stored request back into the fields; returns notes for what could not be restored."""
        notes = []
        if model_id:
            self.select_model(model_id)
        backend = settings.get("backend")
        index = self.backend_combo.findData(backend) if backend else -1
        if index >= 0:
            self.backend_combo.setCurrentIndex(index)
        self.prompt.setPlainText(str(settings.get("prompt", "")))
        self.negative.setPlainText(str(settings.get("negative_prompt", "")))
        self.set_size(int(settings.get("width", DEFAULTS.width)), int(settings.get("height", DEFAULTS.height)))
        self.steps_spin.setValue(int(settings.get("steps", DEFAULTS.steps)))
        self.guidance_spin.setValue(float(settings.get("guidance", DEFAULTS.guidance)))
        scheduler = settings.get("scheduler", DEFAULTS.scheduler)
        if scheduler in SCHEDULER_NAMES:
            self.sampler_combo.setCurrentText(scheduler)
        else:
            notes.append(f"the sampler {scheduler!r} is not available here")
        seed = settings.get("seed")
        if seed is not None:
            self.random_seed.setChecked(False)
            self.seed_spin.setValue(int(seed))
        self.batch_spin.setValue(1)
        self.init_group.set_strength(float(settings.get("strength", DEFAULTS.strength)))
        if settings.get("img2img"):
            notes.append("it was made from a starting image, which is not stored: add it again for image to image")
        loras = [lora if isinstance(lora, dict) else vars(lora) for lora in settings.get("loras") or ()]
        if loras:  # the request and the PNG keep them; the page has no LoRA controls yet
            names = ", ".join(f"{lora.get('name') or Path(str(lora.get('path', ''))).stem} {lora.get('weight', 1):g}"
                              for lora in loras)
            notes.append(f"it was made with LoRAs ({names}), which this page cannot apply yet: "
                         "'atelier image --lora FILE:WEIGHT' can")
        return notes


def settings_from_entry(entry) -> dict:
    """The settings of a gallery image: its stored request, else the parameters inside the PNG."""
    known = {f.name for f in fields(ImageRequest)} - {"init_image"}
    request = dict(entry.request or {})
    if not request.get("prompt"):
        try:
            from engines.diffusion.png_meta import read_png_parameters, request_from_metadata

            meta = read_png_parameters(Path(entry.path))
            rebuilt = request_from_metadata(meta)
        except Exception:
            rebuilt = None
        if rebuilt is not None:
            request = {f.name: getattr(rebuilt, f.name) for f in fields(ImageRequest) if f.name in known}
            request["img2img"] = bool((meta.get("atelier") or {}).get("request", {}).get("init_image_sha256"))
    settings = {k: v for k, v in request.items() if k in known}
    settings["seed"] = entry.seed
    settings["img2img"] = bool(request.get("img2img"))
    settings["backend"] = entry.backend if entry.backend in ("torch", "onnx") else request.get("backend_choice", "auto")
    settings["model_id"] = request.get("model_id")
    settings["model_path"] = request.get("model_path")
    settings["model"] = entry.model
    return settings
