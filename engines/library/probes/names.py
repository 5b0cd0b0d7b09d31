"""Text that came from a file, made safe to show.

A GGUF's ``general.name``, a folder name or a file name from a URL is
written by whoever made the file. Control characters in it (ESC and OSC
sequences, CR, LF, bidirectional overrides) would set a terminal's title,
clear its screen, fake output lines or reorder what the GUI shows (defect
D19), so every name a probe returns passes through :func:`clean_name`.
"""

from __future__ import annotations

import re
import unicodedata

# C0 and C1 controls, DEL, and the Unicode bidirectional embeddings, overrides and isolates.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_ESCAPE_SEQUENCE = re.compile(r"\x1b(\][^\x07\x1b]*(\x07|\x1b\\)?|\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])")
MAX_NAME_CHARS = 200


def strip_controls(text: str) -> str:
    """``text`` with terminal escape sequences and control characters replaced by spaces.

    A whole escape sequence goes, not only its ESC, so ``ESC]0;TITLE BEL`` does not
    leave ``]0;TITLE`` behind in the name.
    """
    text = _ESCAPE_SEQUENCE.sub(" ", text)
    text = "".join("\ufffd" if unicodedata.category(ch) == "Cs" else ch for ch in text)  # lone surrogates
    return _CONTROLS.sub(" ", text)


def clean_name(text: str | None, fallback: str = "model") -> str:
    """A one-line display name: controls stripped, spaces collapsed, at most 200 characters.

    An empty result (a name made only of controls) becomes ``fallback``, cleaned the same way.
    """
    cleaned = " ".join(strip_controls(text or "").split())
    if len(cleaned) > MAX_NAME_CHARS:
        cleaned = cleaned[: MAX_NAME_CHARS - 1].rstrip() + "\u2026"
    if not cleaned:
        cleaned = " ".join(strip_controls(fallback).split())[:MAX_NAME_CHARS] or "model"
    return cleaned
