"""The Server page's "How to connect" tab: the ``openai`` client and curl, with the page's real URL.

The snippets show the token masked unless the page shows it (so the page
can be screenshotted without leaking it); their Copy buttons copy them
with the real token, which is what makes a pasted snippet work as it is.
The text itself is made in snippets.py (no Qt there).
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QFontMetrics
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from desktop.pages.server.snippets import curl_snippet, masked, python_snippet
from desktop.widgets.scroll_area import scroll_area, transparent_body

INTRO = ("Give any OpenAI or Anthropic client the URL as its base URL and the token as its API key. Models are "
         "named by their id, as in 'atelier models list'. The token is hidden here until you press Show; Copy "
         "copies it in full.")


class ConnectTab(QWidget):
    def __init__(self, copy: Callable[[str, str], None], parent=None) -> None:
        super().__init__(parent)
        self._copy = copy  # (text, what to say once copied)
        self._filled = ("", None, "MODEL")  # url, token, model
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        body = transparent_body("ConnectBody")
        outer.addWidget(scroll_area(body))  # a short window scrolls the tab instead of squeezing the code
        layout = QVBoxLayout(body)
        layout.setContentsMargins(8, 8, 8, 8)
        intro = QLabel(INTRO)
        intro.setObjectName("Muted")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.model_note = QLabel()  # which model the examples name, and why that one
        self.model_note.setObjectName("Muted")
        self.model_note.setWordWrap(True)
        self.model_note.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.model_note)
        mono = QFontDatabase.systemFont(QFontDatabase.FixedFont)
        self.python_code = QPlainTextEdit()
        self.curl_code = QPlainTextEdit()
        self.copy_python_button = QPushButton("Copy")
        self.copy_curl_button = QPushButton("Copy")
        self.copy_python_button.setToolTip("Copy the Python code with the real token")
        self.copy_curl_button.setToolTip("Copy the curl command with the real token")
        self.copy_python_button.clicked.connect(lambda: self._copy(self.text(python_snippet), "Copied, with the token."))
        self.copy_curl_button.clicked.connect(lambda: self._copy(self.text(curl_snippet), "Copied, with the token."))
        line = QFontMetrics(mono).lineSpacing()
        for label, code, button, lines in (
                ("Python (pip install openai)", self.python_code, self.copy_python_button, _lines(python_snippet)),
                ("curl", self.curl_code, self.copy_curl_button, _lines(curl_snippet))):
            code.setReadOnly(True)
            code.setFont(mono)
            code.setLineWrapMode(QPlainTextEdit.NoWrap)
            code.setFixedHeight(lines * line + 28)  # every line, and room for a sideways scroll bar
            head = QHBoxLayout()
            head.addWidget(QLabel(label))
            head.addStretch(1)
            head.addWidget(button)
            layout.addLayout(head)
            layout.addWidget(code)
        layout.addStretch(1)

    def fill(self, url: str, token: str | None, model: str, token_shown: bool, model_note: str = "") -> None:
        """Show the snippets for this URL, token (masked unless shown) and model, and which model that is."""
        self._filled = (url, token, model)
        self.model_note.setText(model_note)
        self.model_note.setVisible(bool(model_note))
        self.python_code.setPlainText(self.text(python_snippet, token_shown))
        self.curl_code.setPlainText(self.text(curl_snippet, token_shown))

    def text(self, make, token_shown: bool = True) -> str:
        """One snippet, as shown (``token_shown`` False: masked) or as copied (the real token)."""
        url, token, model = self._filled
        return make(url, masked(token, token_shown) or "TOKEN", model)


def _lines(make) -> int:
    """How many lines a snippet has (the box shows every one)."""
    return make("URL", "TOKEN", "MODEL").count("\n")
