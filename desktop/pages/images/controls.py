"""The left column of the Images page: model, prompt, size, sampling, seed, img2img, Generate.

It only shows and edits values: :meth:`ImageControls.request` turns them
into an :class:`ImageRequest`, :meth:`problems` says in words what is wrong
with them (and the shown problems follow every edit, so none goes stale),
:meth:`apply_settings` puts a stored image's settings back, and
:meth:`prefs` / :meth:`apply_prefs` are what the page remembers across
restarts. A newly chosen model starts at its native size.

One object holds every control (the page and the tests reach them by
name); its parts live in modules by job: the model choice
(:mod:`.model_choice`), the size (:mod:`.size_choice`), what is remembered
and restored (:mod:`.settings_memory`); this module lays them out and owns
the prompt, the sampling and the request.
"""

from __future__ import annotations

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

from desktop.pages.images.control_helpers import DEFAULTS, note as _note, plain_text as _text, set_role as _set_role
from desktop.pages.images.init_image import InitImageGroup
from desktop.pages.images.lora_picker import LoraPicker
from desktop.pages.images.model_choice import BACKENDS, IMAGE_FORMATS, NO_MODELS_NOTE, ModelChoice  # noqa: F401
from desktop.pages.images.settings_memory import SettingsMemory, settings_from_entry  # noqa: F401  (re-exported)
from desktop.pages.images.size_choice import CUSTOM, SIZE_PRESETS, SizeChoice  # noqa: F401
from desktop.pages.images.speed_options import SpeedOptions
from desktop.widgets.expert import HiddenControlsNote, mark_advanced
from desktop.widgets.scroll_area import scroll_area
from engines.diffusion.schedulers import scheduler_problems
from engines.diffusion.types import MAX_BATCH, MAX_SEED, SCHEDULER_NAMES, ImageLoadSpec, ImageRequest


class ImageControls(ModelChoice, SizeChoice, SettingsMemory, QWidget):
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
        self._lora_records: list = []  # the library's LoRA records, for the picker
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
        model_box, backend_row = self._build_model_box()
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
        layout.addWidget(self._build_size_box())

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

        # ---- LoRAs and the speed options (tiny VAE, step caching)
        self.lora_picker = LoraPicker()
        layout.addWidget(self.lora_picker)
        self.speed_options = SpeedOptions()
        layout.addWidget(self.speed_options)
        # Simple mode (desktop/widgets/expert.py) keeps model, prompt, size, steps, guidance, batch and LoRAs.
        mark_advanced(backend_row, self.sampler_combo, self.sampler_note, seed_row, self.speed_options)
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
                       self.init_group.spin.valueChanged, self.lora_picker.changed, self.speed_options.changed):
            signal.connect(self._edited)
        self.backend_combo.currentIndexChanged.connect(self._judge_loras)
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
            loras=self.lora_picker.specs(),
            **self.speed_options.request_fields(),
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
        problems += self.lora_picker.problems()
        return problems

    # ---- LoRAs and tiny VAE: what depends on the model's family ----------------

    def set_loras(self, models) -> None:
        """The library's records (any kind: the LoRAs among them are offered), judged against the chosen model."""
        self._lora_records = [m for m in models if m.kind == "lora"]
        self._judge_loras()

    def set_tiny_vae_finder(self, find) -> None:
        """``find(family)`` → the installed tiny VAE folder of "sd" or "sdxl" ("" when none); see SpeedOptions."""
        self.speed_options.set_tiny_vae_finder(find)

    def _model_folder_changed(self) -> None:
        self.speed_options.set_family(self._folder.family if self._folder is not None else "")
        self._judge_loras()

    def _judge_loras(self, *_args) -> None:
        model = self.current_model()
        onnx = self.backend_combo.currentData() == "onnx" or (self._folder is not None and self._folder.kind == "onnx")
        self.lora_picker.set_installed(self._lora_records, self._folder, model.name if model else "the model", onnx)
        self._refresh_problems()

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
