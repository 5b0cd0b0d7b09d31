"""Render chat messages to the HTML subset that Qt's rich-text engine shows.

Qt-free on purpose (no PySide6 import): the output targets ``QTextBrowser``,
which understands tables, ``pre``, inline ``style`` attributes and cell
background colours, but not CSS classes, flexbox or rounded corners. So every
style here is inline, and "boxes" (user bubbles, code blocks, quote bars) are
single-cell tables.

Model output is untrusted: raw HTML is escaped (markdown-it runs with
``html=False``), unsafe link schemes such as ``javascript:`` are not linkified,
and images are shown as links rather than loaded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from html import escape
from urllib.parse import quote, unquote

from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name, guess_lexer
from pygments.util import ClassNotFound

__all__ = [
    "MessageDisplay", "RenderedMessage", "Theme", "render_message",
    "render_empty_state", "copy_href", "parse_copy_href", "STREAM_CURSOR",
]

STREAM_CURSOR = "\u258d"  # ▍
MONO = "'JetBrains Mono','Cascadia Code','SF Mono',Menlo,Consolas,'DejaVu Sans Mono',monospace"
ROLE_NAMES = {"user": "You", "assistant": "Assistant", "system": "System"}
STATUS_NOTES = {
    "interrupted": "Reply interrupted: the engine stopped.",
    "cancelled": "Stopped.",
    "error": "The reply could not be completed.",
}
_GUESS_MIN_CHARS = 40


@dataclass(frozen=True)
class MessageDisplay:
    """One chat message as the view shows it."""
    key: str
    role: str  # "user" | "assistant" | "system"
    content: str
    status: str = "complete"  # "streaming" | "interrupted" | "cancelled" | "error"
    notice: str | None = None
    meta: str = ""  # small grey line, e.g. "Gemma 3 270M · 34.1 tok/s"


_LIGHT = dict(
    background="#ffffff", text="#1f2328", muted="#6e7781", user_bubble="#eef2f8",
    code_background="#f6f8fa", code_header="#eaeef2", border="#d8dee4",
    link="#0969da", warning="#9a6700", error="#cf222e",
    inline_code_background="#e8ecf0", table_header="#f3f5f7", code_style="default",
)
_DARK = dict(
    background="#1c1e22", text="#e6e8eb", muted="#9198a1", user_bubble="#2a2f37",
    code_background="#13161b", code_header="#22272e", border="#353b44",
    link="#58a6ff", warning="#d29922", error="#f85149",
    inline_code_background="#33383f", table_header="#262b32", code_style="github-dark",
)


@dataclass(frozen=True)
class Theme:
    """Colours for one look. ``Theme(dark=True)`` fills in the dark palette;
    any colour passed explicitly overrides the default."""
    dark: bool
    background: str = ""
    text: str = ""
    muted: str = ""
    user_bubble: str = ""
    code_background: str = ""
    code_header: str = ""
    border: str = ""
    link: str = ""
    warning: str = ""
    error: str = ""
    inline_code_background: str = ""
    table_header: str = ""
    code_style: str = ""  # Pygments style name

    def __post_init__(self) -> None:
        defaults = _DARK if self.dark else _LIGHT
        for f in fields(self):
            if f.name != "dark" and not getattr(self, f.name):
                object.__setattr__(self, f.name, defaults[f.name])


@dataclass(frozen=True)
class RenderedMessage:
    html: str
    code_blocks: list[str] = field(default_factory=list)


def copy_href(message_key: str, index: int) -> str:
    """The anchor target of a code block's Copy link."""
    return f"copy:{quote(message_key, safe='')}:{index}"


def parse_copy_href(href: str) -> tuple[str, int] | None:
    """``copy:KEY:N`` -> ``(KEY, N)``; ``None`` for anything else."""
    if not href.startswith("copy:"):
        return None
    key, sep, index = href[5:].rpartition(":")
    if not sep or not index.isdigit():
        return None
    return unquote(key), int(index)


# --------------------------------------------------------------- highlighting
@lru_cache(maxsize=128)
def _lexer_by_name(name: str):
    try:
        return get_lexer_by_name(name, stripnl=False, ensurenl=False)
    except (ClassNotFound, ValueError, Exception):  # noqa: BLE001 - plugin lexers may raise anything
        return None


@lru_cache(maxsize=16)
def _formatter(style: str) -> HtmlFormatter:
    try:
        return HtmlFormatter(noclasses=True, nowrap=True, style=style)
    except ClassNotFound:
        return HtmlFormatter(noclasses=True, nowrap=True)


def _guess(code: str):
    try:
        lexer = guess_lexer(code, stripnl=False, ensurenl=False)
        if lexer.name != "Text only" and lexer.analyse_text(code) >= 0.1:
            return lexer
    except Exception:  # noqa: BLE001
        pass
    return None


@lru_cache(maxsize=256)
def _highlight(code: str, lang: str, style: str) -> tuple[str, str]:
    """Return ``(html, label)`` for one code block; plain escaped text on failure."""
    lexer = _lexer_by_name(lang.lower()) if lang else None
    if lexer is None and not lang and len(code) > _GUESS_MIN_CHARS:
        lexer = _guess(code)
    label = lang or (lexer.name if lexer is not None else "text")
    if lexer is not None:
        try:
            return highlight(code, lexer, _formatter(style)).rstrip("\n"), label
        except Exception:  # noqa: BLE001 - a lexer bug must not break the chat
            pass
    return escape(code, quote=False), label


# ------------------------------------------------------------------ markdown
def _code_block_html(code: str, lang: str, env: dict) -> str:
    theme: Theme = env["theme"]
    blocks: list[str] = env["blocks"]
    code = code[:-1] if code.endswith("\n") else code
    index = len(blocks)
    blocks.append(code)
    body, label = _highlight(code, lang, theme.code_style)
    t = theme
    return (
        f'<table width="100%" cellspacing="0" cellpadding="0" border="1" '
        f'style="margin-top:6px; margin-bottom:12px; border-collapse:collapse; '
        f'border-color:{t.border}; border-style:solid;">'
        f'<tr><td bgcolor="{t.code_header}" style="padding:5px 12px;">'
        f'<span style="font-size:small; color:{t.muted};">{escape(label)}</span></td>'
        f'<td bgcolor="{t.code_header}" align="right" style="padding:5px 12px;">'
        f'<a href="{copy_href(env["key"], index)}" style="font-size:small; '
        f'color:{t.link}; text-decoration:none;">Copy</a></td></tr>'
        f'<tr><td colspan="2" bgcolor="{t.code_background}" style="padding:10px 12px;">'
        f'<pre style="margin:0; font-family:{MONO}; color:{t.text};">{body}</pre>'
        f"</td></tr></table>\n"
    )


def _fence(self, tokens, idx, options, env):
    token = tokens[idx]
    lang = token.info.strip().split(maxsplit=1)[0] if token.info.strip() else ""
    return _code_block_html(token.content, lang, env)


def _code_block(self, tokens, idx, options, env):
    return _code_block_html(tokens[idx].content, "", env)


def _code_inline(self, tokens, idx, options, env):
    t: Theme = env["theme"]
    return (f'<span style="font-family:{MONO}; background-color:{t.inline_code_background};">'
            f"\u2009{escape(tokens[idx].content, quote=False)}\u2009</span>")


def _image(self, tokens, idx, options, env):
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = self.renderInlineAsText(token.children or [], options, env) or src
    if src.startswith(("http://", "https://")):
        return f'<a href="{escape(src)}">[image: {escape(alt)}]</a>'
    return escape(f"[image: {alt}]", quote=False)


_HEADING_SIZES = {"h1": "x-large", "h2": "large", "h3": "medium"}


def _heading_open(self, tokens, idx, options, env):
    tag = tokens[idx].tag
    size = _HEADING_SIZES.get(tag, "medium")
    return (f'<{tag} style="font-size:{size}; font-weight:600; '
            f'margin-top:14px; margin-bottom:6px;">')


def _paragraph_open(self, tokens, idx, options, env):
    if tokens[idx].hidden:
        return ""
    return '<p style="margin-top:0px; margin-bottom:10px;">'


def _blockquote_open(self, tokens, idx, options, env):
    t: Theme = env["theme"]
    return (f'<table cellspacing="0" cellpadding="0" style="margin-top:2px; margin-bottom:10px;">'
            f'<tr><td width="3" bgcolor="{t.border}"></td>'
            f'<td style="padding-left:12px; color:{t.muted};">')


def _blockquote_close(self, tokens, idx, options, env):
    return "</td></tr></table>\n"


def _table_open(self, tokens, idx, options, env):
    t: Theme = env["theme"]
    return (f'<table border="1" cellspacing="0" cellpadding="6" style="margin-top:4px; '
            f'margin-bottom:12px; border-collapse:collapse; border-color:{t.border}; '
            f'border-style:solid;">\n')


def _cell_open(self, tokens, idx, options, env):
    token = tokens[idx]
    t: Theme = env["theme"]
    align = (token.attrGet("style") or "").replace("text-align:", "").strip()
    attrs = f' align="{align}"' if align in ("left", "center", "right") else ""
    if token.tag == "th":
        attrs += f' bgcolor="{t.table_header}"'
    return f"<{token.tag}{attrs}>"


def _link_open(self, tokens, idx, options, env):
    href = tokens[idx].attrGet("href") or ""
    t: Theme = env["theme"]
    return f'<a href="{escape(href)}" style="color:{t.link};">'


def _hr(self, tokens, idx, options, env):
    return f'<hr style="background-color:{env["theme"].border};" />\n'


def _make_md(breaks: bool) -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": breaks})
    md.enable("table").enable("strikethrough")
    for name, rule in {
        "fence": _fence, "code_block": _code_block, "code_inline": _code_inline,
        "image": _image, "heading_open": _heading_open, "paragraph_open": _paragraph_open,
        "blockquote_open": _blockquote_open, "blockquote_close": _blockquote_close,
        "table_open": _table_open, "th_open": _cell_open, "td_open": _cell_open,
        "link_open": _link_open, "hr": _hr,
    }.items():
        md.add_render_rule(name, rule)
    return md


_MD_ASSISTANT = _make_md(breaks=False)
_MD_USER = _make_md(breaks=True)  # people type line breaks and expect to see them

# The cursor goes inside the last text block when there is one.
_TAIL_RE = re.compile(r"(</(?:p|li|h[1-6])>)((?:\s*</(?:ul|ol|li)>)*\s*)$")


def _add_cursor(body: str, theme: Theme) -> str:
    cursor = f'<span style="color:{theme.muted};">{STREAM_CURSOR}</span>'
    match = _TAIL_RE.search(body)
    if match:
        return body[: match.start()] + cursor + match.group(1) + match.group(2)
    return body + f'<p style="margin-top:0px; margin-bottom:10px;">{cursor}</p>'


# ------------------------------------------------------------------ messages
def _small(text: str, color: str, top: int = 4) -> str:
    return (f'<p style="margin-top:{top}px; margin-bottom:0px; font-size:small; '
            f'color:{color};">{escape(text, quote=False)}</p>')


def render_message(msg: MessageDisplay, theme: Theme) -> RenderedMessage:
    """Render one message to a self-contained HTML fragment."""
    t = theme
    blocks: list[str] = []
    env = {"key": msg.key, "theme": t, "blocks": blocks}
    md = _MD_USER if msg.role == "user" else _MD_ASSISTANT
    body = md.render(msg.content, env) if msg.content.strip() else ""
    if msg.status == "streaming":
        body = _add_cursor(body, t)
    elif not body and msg.role == "assistant" and msg.status == "complete":
        body = _small("(empty reply)", t.muted, top=0)

    parts = [body.rstrip("\n")]
    if msg.meta:
        parts.append(_small(msg.meta, t.muted))
    if msg.notice:
        parts.append(_small(msg.notice, t.warning))
    note = STATUS_NOTES.get(msg.status)
    if note:
        color = {"cancelled": t.muted, "error": t.error}.get(msg.status, t.warning)
        parts.append(_small(note, color))

    role = ROLE_NAMES.get(msg.role, msg.role.title() or "Message")
    header = (f'<p style="margin-top:0px; margin-bottom:6px; font-weight:600; '
              f'color:{t.muted if msg.role == "system" else t.text};">{escape(role)}</p>')
    bubble = f' bgcolor="{t.user_bubble}"' if msg.role == "user" else ""
    html = (
        f'<table width="100%" cellspacing="0" cellpadding="14"{bubble} '
        f'style="margin-top:4px; margin-bottom:4px; color:{t.text};">'
        f'<tr><td>{header}{"".join(parts)}</td></tr></table>'
    )
    return RenderedMessage(html=html, code_blocks=blocks)


def render_empty_state(theme: Theme, title: str, body: str) -> str:
    """A centred, muted welcome for an empty conversation."""
    paragraphs = "".join(
        f'<p align="center" style="margin-top:0px; margin-bottom:6px; color:{theme.muted};">'
        f"{escape(line, quote=False)}</p>"
        for line in body.splitlines() if line.strip()
    )
    return (
        f'<table width="100%" cellspacing="0" cellpadding="0" style="margin-top:120px;">'
        f'<tr><td align="center">'
        f'<p align="center" style="margin-top:0px; margin-bottom:10px; font-size:x-large; '
        f'font-weight:600; color:{theme.text};">{escape(title, quote=False)}</p>'
        f"{paragraphs}</td></tr></table>"
    )
