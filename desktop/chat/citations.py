"""A grounded reply's sources under it: rendering, their links, and opening a source at its page.

Each source is one line: ``[1] notes.md, page 2 · score 0.0164 ·
similarity 0.62 · passage``. The file name opens the file with the
system's app (a PDF at its page where the viewer takes one on its command
line: Evince, Okular, Zathura, qpdfview, MuPDF; else the file);
"passage" shows the exact text the model was given. When nothing
relevant was found, the notice is shown plainly instead, in the
warning colour, so an answer that does not come from the documents never
looks as if it did.
"""

from __future__ import annotations

import os
import shutil
import sys
from html import escape

from engines.chat.citations import nothing_found, scores_text, sources_heading, where

CITE_SCHEME = "atelier-source:"


def source_href(message_key: str, number: int, action: str) -> str:
    """``action``: "open" (the file, at its page) or "passage" (the text the model was given)."""
    return f"{CITE_SCHEME}{action}/{message_key}/{number}"


def parse_source_href(href: str) -> tuple[str, str, int] | None:
    """(action, message key, number) of a source link; None for any other link."""
    if not href.startswith(CITE_SCHEME):
        return None
    try:
        action, key, number = href[len(CITE_SCHEME):].split("/", 2)
        return action, key, int(number)
    except ValueError:
        return None


def render_sources(sources, message_key: str, theme) -> str:
    """The sources block of one reply (an engines.chat.citations.ReplySources), Qt rich text."""
    t = theme
    if not sources.citations:
        return (f'<p style="margin-top:6px; margin-bottom:0px; font-size:small; color:{t.warning};">'
                f'{escape(nothing_found(sources), quote=False)}</p>')
    lines = [f'<p style="margin-top:8px; margin-bottom:2px; font-size:small; font-weight:600; color:{t.muted};">'
             f"{escape(sources_heading(sources), quote=False)}</p>"]
    for citation in sources.citations:
        lines.append(
            f'<p style="margin-top:0px; margin-bottom:1px; font-size:small; color:{t.muted};">[{citation.number}] '
            f'<a href="{source_href(message_key, citation.number, "open")}" style="color:{t.link};" '
            f'title="{escape(citation.path)}">{escape(where(citation))}</a>'
            f" · {scores_text(citation)} · "
            f'<a href="{source_href(message_key, citation.number, "passage")}" style="color:{t.link};">passage</a>'
            "</p>")
    if sources.notice:
        lines.append(f'<p style="margin-top:2px; margin-bottom:0px; font-size:small; color:{t.warning};">'
                     f"{escape(sources.notice, quote=False)}</p>")
    return "".join(lines)


# Viewers that open a PDF at a page from their command line, by the name of their .desktop file.
_PAGE_ARGUMENTS = {  # keys in lower case: desktop file names differ in case between distributions
    "org.gnome.evince": ("evince", lambda page: ["--page-index", str(page)]),
    "evince": ("evince", lambda page: ["--page-index", str(page)]),
    "okularapplication_pdf": ("okular", lambda page: ["--page", str(page)]),
    "org.kde.okular": ("okular", lambda page: ["--page", str(page)]),
    "org.pwmt.zathura": ("zathura", lambda page: ["--page", str(page)]),
    "zathura": ("zathura", lambda page: ["--page", str(page)]),
    "qpdfview": ("qpdfview", lambda page: [f"#{page}"]),  # qpdfview takes FILE#PAGE
    "mupdf": ("mupdf", lambda page: [str(page)]),  # mupdf takes FILE PAGE
}


def page_command(path: str, page: int | None) -> list[str] | None:
    """The command that opens ``path`` at ``page`` in the system's PDF viewer; None when none is known to take one."""
    if not page or not path.lower().endswith(".pdf") or not sys.platform.startswith("linux"):
        return None
    xdg_mime = shutil.which("xdg-mime")
    if not xdg_mime:
        return None
    import subprocess

    try:
        found = subprocess.run([xdg_mime, "query", "default", "application/pdf"], capture_output=True, text=True,
                               timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    known = _PAGE_ARGUMENTS.get(found.removesuffix(".desktop").lower())
    if known is None:
        return None
    program, arguments = known
    binary = shutil.which(program)
    if binary is None:
        return None
    if program == "qpdfview":
        return [binary, f"{path}#{page}"]
    if program == "mupdf":
        return [binary, path, str(page)]
    return [binary, *arguments(page), path]


def open_source(path: str, page: int | None, on_failure) -> bool:
    """Open the file of a citation, at its page when the PDF viewer takes one; a failure is one sentence."""
    from PySide6.QtCore import QProcess

    from desktop.open_external import open_path

    command = page_command(path, page) if os.path.exists(path) else None
    if command is not None and QProcess.startDetached(command[0], command[1:])[0]:
        return True
    return open_path(path, on_failure)
