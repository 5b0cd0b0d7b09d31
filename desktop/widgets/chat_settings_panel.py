"""The right-hand panel of the chat page: model, load settings, system prompt, sampling.

It only shows and edits values. The controller decides what to do with
them (save per chat, save per model, reload the model).
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
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.widgets.expert import HiddenControlsNote, mark_advanced
from engines.api import SamplingParams
from engines.kv_cache import CACHE_TYPES, DEFAULT_CACHE_TYPE
from engines.settings import LoadPrefs


def _double(low: float, high: float, step: float, decimals: int = 2) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setDecimals(decimals)
    box.setMinimumWidth(72)  # an explicit minimum beats the range-based size hint
    return box


def _int(low: int, high: int, step: int = 1, special: str | None = None) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setGroupSeparatorShown(True)
    if special:
        box.setSpecialValueText(special)
    box.setMinimumWidth(72)
    return box


def _form(parent) -> QFormLayout:
    form = QFormLayout(parent)
    form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
    form.setRowWrapPolicy(QFormLayout.DontWrapRows)
    form.setLabelAlignment(Qt.AlignLeft | Qt.AlignVCenter)
    return form


LOAD_NOTE = "Changes apply on the next message (the model reloads)."
REMOTE_LOAD_NOTE = "This model runs on a remote server, which loads it with its own settings."
REMOTE_SAMPLING_NOTE = "A remote server uses its own setting for this: the OpenAI API has no such field."


class ChatSettingsPanel(QScrollArea):
    model_changed = Signal(str)
    add_model_requested = Signal()
    unload_requested = Signal()
    sampling_changed = Signal(object)  # SamplingParams
    system_prompt_changed = Signal(str)
    load_prefs_changed = Signal(object)  # LoadPrefs

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("PanelScroll")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setMinimumWidth(310)
        self.setMaximumWidth(380)
        body = QFrame()
        body.setObjectName("Panel")
        self.setWidget(body)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(12, 12, 12, 12)
        self._updating = False

        model_box = QGroupBox("Model")
        model_layout = QVBoxLayout(model_box)
        self.model_combo = QComboBox()
        self.model_combo.currentIndexChanged.connect(self._model_index_changed)
        model_layout.addWidget(self.model_combo)
        self.model_note = QLabel()
        self.model_note.setObjectName("Muted")
        self.model_note.setWordWrap(True)
        model_layout.addWidget(self.model_note)
        row = QHBoxLayout()
        self.add_button = QPushButton("Add model file…")
        self.add_button.clicked.connect(self.add_model_requested)
        self.unload_button = QPushButton("Unload")
        self.unload_button.setToolTip("Stop the engine and give the model's memory back")
        self.unload_button.clicked.connect(self.unload_requested)
        row.addWidget(self.add_button)
        row.addWidget(self.unload_button)
        model_layout.addLayout(row)
        layout.addWidget(model_box)

        load_box = QGroupBox("Load settings (this model)")
        load_form = _form(load_box)
        self.context = _int(256, 1_048_576, 1024)
        self.threads = _int(0, 256, 1, special="Auto (physical cores)")
        self.gpu_layers = _int(-1, 1000, 1, special="All")
        self.gpu_layers.setEnabled(False)
        self.gpu_layers.setToolTip("This llama.cpp build cannot offload to a GPU.")
        self.cache_type = QComboBox()
        # Its longest label ("q4_0 (a quarter of the memory)") would otherwise widen the whole panel past the
        # window's edge; the popup still shows the labels in full.
        self.cache_type.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.cache_type.setMinimumContentsLength(10)
        for name, info in CACHE_TYPES.items():
            self.cache_type.addItem(f"{name} ({info.description})", name)
        self.cache_type.setToolTip(
            "How the context (keys and values) is stored. q8_0 halves its memory with almost no loss, "
            "q4_0 quarters it; both turn on flash attention, which llama.cpp needs for them."
        )
        self.cache_type.currentIndexChanged.connect(self._emit_load_prefs)
        load_form.addRow("Context length", self.context)
        load_form.addRow("Context cache", self.cache_type)
        load_form.addRow("CPU threads", self.threads)
        load_form.addRow("GPU layers", self.gpu_layers)
        for box in (self.context, self.threads, self.gpu_layers):
            box.editingFinished.connect(self._emit_load_prefs)
        self.load_note = QLabel(LOAD_NOTE)
        self.load_note.setObjectName("Muted")
        self.load_note.setWordWrap(True)
        load_form.addRow(self.load_note)
        layout.addWidget(load_box)
        self.load_box = load_box

        system_box = QGroupBox("System prompt (this chat)")
        system_layout = QVBoxLayout(system_box)
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("e.g. You are a concise assistant.")
        self.system_prompt.setFixedHeight(90)
        self.system_prompt.textChanged.connect(self._system_changed)
        system_layout.addWidget(self.system_prompt)
        layout.addWidget(system_box)

        sampling_box = QGroupBox("Sampling (this chat)")
        form = _form(sampling_box)
        self.temperature = _double(0.0, 5.0, 0.05)
        self.top_p = _double(0.01, 1.0, 0.01)
        self.top_k = _int(0, 1000, 1, special="Off")
        self.min_p = _double(0.0, 1.0, 0.01)
        self.repeat_penalty = _double(0.5, 3.0, 0.01)
        self.max_tokens = _int(1, 131_072, 64)
        self.random_seed = QCheckBox("Random")
        self.seed = _int(0, 2_147_483_647)
        seed_row = QWidget()
        seed_layout = QHBoxLayout(seed_row)
        seed_layout.setContentsMargins(0, 0, 0, 0)
        seed_layout.addWidget(self.random_seed)
        seed_layout.addWidget(self.seed, 1)
        self.random_seed.toggled.connect(lambda on: self.seed.setEnabled(not on))
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Top-k", self.top_k)
        form.addRow("Min-p", self.min_p)
        form.addRow("Repeat penalty", self.repeat_penalty)
        form.addRow("Max tokens", self.max_tokens)
        form.addRow("Seed", seed_row)
        for box in (self.temperature, self.top_p, self.top_k, self.min_p, self.repeat_penalty, self.max_tokens, self.seed):
            box.valueChanged.connect(self._emit_sampling)
        self.random_seed.toggled.connect(self._emit_sampling)
        self.reset_button = QPushButton("Reset to defaults")
        self.reset_button.clicked.connect(lambda: (self.set_sampling(SamplingParams()), self._emit_sampling()))
        form.addRow(self.reset_button)
        layout.addWidget(sampling_box)
        # Simple mode (desktop/widgets/expert.py) keeps the model, the system prompt and the temperature.
        mark_advanced(load_box, self.top_p, self.top_k, self.min_p, self.repeat_penalty, self.max_tokens, seed_row)
        self.hidden_note = HiddenControlsNote()
        layout.addWidget(self.hidden_note)
        layout.addStretch(1)
        self.set_sampling(SamplingParams())

    # ---- models ----------------------------------------------------------

    def set_models(self, models, current_id: str | None) -> None:
        self._updating = True
        self.model_combo.clear()
        for model in models:
            self.model_combo.addItem(model.name, model.id)
            self.model_combo.setItemData(self.model_combo.count() - 1, model.description or model.path, Qt.ToolTipRole)
        index = self.model_combo.findData(current_id) if current_id else -1
        self.model_combo.setCurrentIndex(index if index >= 0 else (0 if models else -1))
        self._updating = False
        if not models:
            self.model_note.setText("No models yet. Add a .gguf file, or drop one onto the window.")

    def current_model_id(self) -> str | None:
        return self.model_combo.currentData()

    def set_model_note(self, text: str) -> None:
        self.model_note.setText(text)

    def _model_index_changed(self, _index: int) -> None:
        if not self._updating and self.current_model_id():
            self.model_changed.emit(self.current_model_id())

    def set_remote_model(self, remote: bool) -> None:
        """A model on a remote server: the server loads it, and takes only the OpenAI API's sampling fields.

        Its load settings and top-k, min-p and repeat penalty (which the OpenAI API does not have, and some
        servers refuse) are the server's own, so they are shown disabled rather than silently ignored.
        """
        self.load_box.setEnabled(not remote)
        self.load_note.setText(REMOTE_LOAD_NOTE if remote else LOAD_NOTE)
        for box in (self.top_k, self.min_p, self.repeat_penalty):
            box.setEnabled(not remote)
            box.setToolTip(REMOTE_SAMPLING_NOTE if remote else "")

    def set_gpu_offload(self, supported: bool) -> None:
        self.gpu_layers.setEnabled(supported)
        self.gpu_layers.setToolTip(
            "Layers to put on the GPU (All = every layer)." if supported else "This llama.cpp build cannot offload to a GPU."
        )

    # ---- load prefs ------------------------------------------------------

    def set_load_prefs(self, prefs: LoadPrefs) -> None:
        self._updating = True
        self.context.setValue(prefs.context_length)
        self.threads.setValue(prefs.threads or 0)
        self.gpu_layers.setValue(-1 if prefs.gpu_layers is None else prefs.gpu_layers)
        self.cache_type.setCurrentIndex(max(0, self.cache_type.findData(prefs.cache_type)))
        self._updating = False

    def load_prefs(self) -> LoadPrefs:
        gpu = self.gpu_layers.value()
        return LoadPrefs(
            context_length=self.context.value(),
            threads=self.threads.value() or None,
            gpu_layers=None if gpu < 0 else gpu,
            cache_type=self.cache_type.currentData() or DEFAULT_CACHE_TYPE,
        )

    def _emit_load_prefs(self, *_args) -> None:
        if not self._updating:
            self.load_prefs_changed.emit(self.load_prefs())

    # ---- chat settings ---------------------------------------------------

    def set_system_prompt(self, text: str) -> None:
        self._updating = True
        self.system_prompt.setPlainText(text)
        self._updating = False

    def _system_changed(self) -> None:
        if not self._updating:
            self.system_prompt_changed.emit(self.system_prompt.toPlainText())

    def set_sampling(self, sampling: SamplingParams) -> None:
        self._updating = True
        self.temperature.setValue(sampling.temperature)
        self.top_p.setValue(sampling.top_p)
        self.top_k.setValue(sampling.top_k)
        self.min_p.setValue(sampling.min_p)
        self.repeat_penalty.setValue(sampling.repeat_penalty)
        self.max_tokens.setValue(sampling.max_tokens)
        self.random_seed.setChecked(sampling.seed is None)
        self.seed.setValue(sampling.seed or 0)
        self.seed.setEnabled(sampling.seed is not None)
        self._updating = False

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=round(self.temperature.value(), 4),
            top_p=round(self.top_p.value(), 4),
            top_k=self.top_k.value(),
            min_p=round(self.min_p.value(), 4),
            repeat_penalty=round(self.repeat_penalty.value(), 4),
            max_tokens=self.max_tokens.value(),
            seed=None if self.random_seed.isChecked() else self.seed.value(),
        )

    def _emit_sampling(self, *_args) -> None:
        if not self._updating:
            self.sampling_changed.emit(self.sampling())
