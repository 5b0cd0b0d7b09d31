"""What the ``atelier`` command prints: safe for the terminal, exact for scripts.

Names, paths, URLs and messages printed by the CLI often come from files
and servers the user does not control: a GGUF's ``general.name``, a URL's
file name, an engine's error that quotes them. Printed raw, an ESC or OSC
sequence in them sets the terminal's title, clears the screen or fakes
output lines, and a CR or LF forges lines. So every such value goes
through :func:`clean` before it is printed: control characters (C0 but
tab, DEL, C1) and undecodable bytes are shown as visible escapes (``\\x1b``,
``\\n``, ``\\xff``) instead of being acted on. Escapes, not deletions: the
user can still tell which file is meant, and that something odd is in its
name.

JSON output (:func:`print_json`) needs no cleaning of values, since JSON
escapes control characters itself; only DEL, C1 and lone surrogates, which
``json.dumps`` leaves raw, are escaped, so the data stays exact for
machines.

Text a model generates is different: it is the output the user asked for.
:func:`model_text_filter` passes it through unchanged into a pipe or a
file, but strips escape sequences and control characters when stdout is a
terminal, where a reply could otherwise retitle the window or rewrite the
screen (or, with OSC 52, the clipboard). Stripped there, not escaped: the
reader wants the prose, not ``\\x1b[31m`` noise.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Callable, TextIO

# An escape sequence as a terminal parses it: CSI (ESC [ ... final), OSC/DCS/SOS/PM/APC strings
# (up to BEL or ESC \, or to the end of the text), or a two-character ESC x.
_ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -~]?"
)
# What a terminal acts on: C0 controls (tab and newline handled by the callers), DEL, C1 controls.
_CONTROL_ONE_LINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_STREAM = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\x1b": "\\x1b"}


def _visible(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.fsdecode keeps it (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: object) -> str:
    """``value`` as one printable line: control characters and undecodable bytes become visible escapes."""
    return _CONTROL_ONE_LINE.sub(_visible, str(value))


def strip_terminal_controls(text: str) -> str:
    """Model text for a terminal: escape sequences and control characters removed; newlines and tabs kept."""
    return _CONTROL_STREAM.sub("", _ESCAPE_SEQUENCE.sub("", text))


def model_text_filter(stream: TextIO) -> Callable[[str], str]:
    """How to print model-generated text on ``stream``: as it is into a pipe or file, stripped on a terminal."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # no stream, or a closed one
        tty = False
    return strip_terminal_controls if tty else (lambda text: text)


def _utf8(stream: TextIO) -> bool:
    return (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "") == "utf8"


def print_json(data: dict) -> None:
    """One JSON line on stdout: exact values, nothing a terminal acts on, ASCII when stdout is not UTF-8."""
    text = json.dumps(data, ensure_ascii=not _utf8(sys.stdout), default=str)
    print(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text), flush=True)


def print_error(message: str) -> None:
    """The one ``error:`` line on stderr. Best effort: a closed or broken stderr cannot make it fail."""
    try:
        print(f"error: {clean(message)}", file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):  # stderr closed, a broken pipe, or no stderr at all
        pass


def print_note(message: str) -> None:
    """A ``note:`` line on stderr: something the user should know, which is not an error."""
    try:
        print(f"note: {clean(message)}", file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass
