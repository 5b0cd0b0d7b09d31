"""A document's text as the readers give it: per page, with a note about what was left out."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    format: str  # "pdf", "docx", "html", "epub", "markdown", "text", "code"
    pages: tuple[tuple[int | None, str], ...]  # (1-based page number or None, text)
    note: str = ""  # what was left out, in words (PDF pages without text)

    @property
    def characters(self) -> int:
        return sum(len(text) for _, text in self.pages)


_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n+")


def tidy(text: str) -> str:
    """Markup's text with its layout whitespace folded: single spaces, at most one blank line."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
