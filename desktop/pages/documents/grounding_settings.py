"""Settings → Documents: the grounding prompt, visible and editable, with "Restore default".

This is exactly the text a model answering from a collection is given
(``{documents}`` is replaced by the passages, or by the whole collection
when it fits; a prompt without the placeholder gets them after it), in
the chat page and in ``atelier chat --docs`` alike. It is saved a moment
after typing stops; an empty prompt, or one over the settings' limit, is
refused with a line under the box and the saved one stays in use.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout

from engines.settings import DEFAULT_GROUNDING_PROMPT

MAX_PROMPT_CHARS = 20_000  # engines.settings.Settings.grounding_prompt's own limit
SAVE_AFTER_MS = 600


class GroundingPromptSection(QGroupBox):
    def __init__(self, workspace, on_error, parent=None) -> None:
        super().__init__("Documents", parent)
        self.workspace = workspace
        self._on_error = on_error
        layout = QVBoxLayout(self)
        about = QLabel("What a model answering from your documents is told. {documents} is replaced by the passages "
                       "found (or the whole collection, when it fits in the context), numbered [1], [2]…")
        about.setObjectName("Muted")
        about.setWordWrap(True)
        layout.addWidget(about)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlainText(workspace.settings.grounding_prompt)
        self.prompt.setFixedHeight(120)
        layout.addWidget(self.prompt)
        row = QHBoxLayout()
        self.restore_button = QPushButton("Restore default")
        row.addWidget(self.restore_button)
        self.note = QLabel()
        self.note.setObjectName("Muted")
        self.note.setWordWrap(True)
        row.addWidget(self.note, 1)
        layout.addLayout(row)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(SAVE_AFTER_MS)
        self._timer.timeout.connect(self.save)
        self.prompt.textChanged.connect(self._timer.start)
        self.restore_button.clicked.connect(self.restore_default)
        self._show_default_state()

    def restore_default(self) -> None:
        self.prompt.setPlainText(DEFAULT_GROUNDING_PROMPT)
        self.save()

    def save(self) -> bool:
        """Keep the prompt as typed; False (with the reason under the box) when it cannot be used."""
        self._timer.stop()
        text = self.prompt.toPlainText()
        if not text.strip():
            self.note.setText("The prompt is empty, so it was not saved: the one saved before stays in use. "
                              "“Restore default” brings back Atelier's.")
            return False
        if len(text) > MAX_PROMPT_CHARS:
            self.note.setText(f"The prompt is {len(text):,} characters; at most {MAX_PROMPT_CHARS:,} are kept. It "
                              "was not saved.")
            return False
        if text == self.workspace.settings.grounding_prompt:
            self._show_default_state()
            return True
        previous = self.workspace.settings.grounding_prompt
        self.workspace.settings.grounding_prompt = text
        try:
            self.workspace.save_settings()
        except OSError as exc:
            self.workspace.settings.grounding_prompt = previous
            self._on_error(f"The grounding prompt could not be saved: {exc.strerror or exc}.")
            return False
        self._show_default_state()
        return True

    def _show_default_state(self) -> None:
        default = self.workspace.settings.grounding_prompt == DEFAULT_GROUNDING_PROMPT
        self.restore_button.setEnabled(not default or self.prompt.toPlainText() != DEFAULT_GROUNDING_PROMPT)
        missing = "{documents}" not in self.prompt.toPlainText()
        self.note.setText(("Atelier's default prompt." if default else "Your own prompt; it applies to the next "
                           "grounded answer.") + (" Without {documents}, the passages come after it." if missing
                                                  else ""))
