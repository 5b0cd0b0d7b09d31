"""Render chat messages to the HTML subset that Qt's rich-text engine shows.

Qt-free (no PySide6 import). ``QTextBrowser`` understands tables, ``pre`` and
inline ``style`` attributes but not CSS classes, flexbox or rounded corners, so
every style is inline and boxes (bubbles, code blocks, quote bars) are tables.
Model output is untrusted: raw HTML is escaped (``html=False``), ``javascript:``
and similar links are not linkified, and images become links, never loaded.
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
from pygments.styles import get_style_by_name
from pygments.token import Token
from pygments.util import ClassNotFound

__all__ = ["MessageDisplay", "RenderedMessage", "Theme", "render_message", "render_markdown",
           "render_empty_state", "copy_href", "parse_copy_href", "version_href", "parse_version_href",
           "split_chunks", "STREAM_CURSOR"]

STREAM_CURSOR = "\u258d"  # ▍
MONO = "'JetBrains Mono','Cascadia Code','SF Mono',Menlo,Consolas,'DejaVu Sans Mono',monospace"
ROLE_NAMES = {"user": "You", "assistant": "Assistant", "system": "System"}
STATUS_NOTES = {"interrupted": "Reply interrupted: the engine stopped.", "cancelled": "Stopped.",
                "error": "The reply could not be completed."}
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
    version: int = 1  # which of the reply's versions is shown (Regenerate adds versions)
    versions: int = 1
    images: tuple[bytes, ...] = ()  # attached to a user message (for a vision model), shown above its text
    calls: tuple = ()  # a reply's tool calls (desktop.chat.tool_calls.CallDisplay), shown before its answer
    sources: object = None  # a grounded reply's documents (engines.chat.citations.ReplySources), shown under it


_LIGHT = dict(
    background="#ffffff", text="#1f2328", muted="#6e7781", user_bubble="#eef2f8",
    code_background="#f6f8fa", code_header="#eaeef2", border="#d8dee4",
    link="#0969da", warning="#9a6700", error="#cf222e",
    inline_code_background="#e8ecf0", table_header="#eef1f5", code_style="default",
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
    muted: str = ""  # headers of system messages, meta lines, code labels
    user_bubble: str = ""
    code_background: str = ""
    code_header: str = ""
    inline_code_background: str = ""
    table_header: str = ""
    border: str = ""
    link: str = ""
    warning: str = ""
    error: str = ""
    code_style: str = ""  # a Pygments style name

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
    key, sep, index = href[5:].rpartition(":") if href.startswith("copy:") else ("", "", "")
    return (unquote(key), int(index)) if sep and index.isdigit() else None


def version_href(message_key: str, step: int) -> str:
    """The anchor target of a reply's ‹ (step -1) or › (step +1) version link."""
    return f"version:{quote(message_key, safe='')}:{'next' if step > 0 else 'prev'}"


def parse_version_href(href: str) -> tuple[str, int] | None:
    """``version:KEY:prev|next`` -> ``(KEY, -1|+1)``; ``None`` for anything else."""
    key, sep, step = href[8:].rpartition(":") if href.startswith("version:") else ("", "", "")
    return (unquote(key), 1 if step == "next" else -1) if sep and step in ("prev", "next") else None


# --------------------------------------------------------------- highlighting
@lru_cache(maxsize=128)
def _lexer_by_name(name: str):
    try:
        return get_lexer_by_name(name, stripnl=False, ensurenl=False)
    except Exception:  # noqa: BLE001 - ClassNotFound, or anything a plugin lexer raises
        return None


@lru_cache(maxsize=16)
def _formatter(style: str) -> HtmlFormatter:
    """An inline-style formatter whose style leaves plain text and whitespace
    unstyled: every span costs Qt a char format, so the fewer the better."""
    try:
        base = get_style_by_name(style)
    except ClassNotFound:
        base = get_style_by_name("default")
    root = base.styles.get(Token, "")
    styles = {tok: ("" if tok in (Token, Token.Text, Token.Text.Whitespace) or value == root else value)
              for tok, value in base.styles.items()}
    styles[Token.Text.Whitespace] = ""
    lean = type(f"Lean{base.__name__}", (base,), {"styles": styles})
    return HtmlFormatter(noclasses=True, nowrap=True, style=lean)


def _guess(code: str):
    try:  # guess_lexer always answers something; keep only confident guesses
        lexer = guess_lexer(code, stripnl=False, ensurenl=False)
        return lexer if lexer.name != "Text only" and lexer.analyse_text(code) >= 0.1 else None
    except Exception:  # noqa: BLE001
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
_P_STYLE = "margin-top:0px; margin-bottom:10px; line-height:135%;"
_HEADING_SIZES = {"h1": "x-large", "h2": "large"}  # h3..h6: medium, bold


def _code_block_html(code: str, lang: str, env: dict) -> str:
    t: Theme = env["theme"]
    code = code[:-1] if code.endswith("\n") else code
    index = len(env["blocks"])
    env["blocks"].append(code)
    body, label = _highlight(code, lang, t.code_style)
    # One column (a two-cell header row would draw a divider between the cells);
    # label and Copy link sit in a borderless nested table. The href is a slot
    # that render_markdown() fills in with copy:KEY:N.
    return (
        f'<table width="100%" cellspacing="0" cellpadding="0" border="1" style="margin-top:6px; '
        f'margin-bottom:12px; border-collapse:collapse; border-color:{t.border}; border-style:solid;">'
        f'<tr><td bgcolor="{t.code_header}" style="padding:5px 12px;">'
        f'<table width="100%" cellspacing="0" cellpadding="0" border="0" style="margin:0px;">'
        f'<tr><td><span style="font-size:small; color:{t.muted};">{escape(label)}</span></td>'
        f'<td align="right"><a href="\x00{index}\x00" style="font-size:small; color:{t.link}; '
        f'text-decoration:none;">Copy</a></td></tr></table></td></tr>'
        f'<tr><td bgcolor="{t.code_background}" style="padding:10px 12px;">'
        f'<pre style="margin:0px; font-family:{MONO}; color:{t.text};">{body}</pre></td></tr></table>\n'
    )


def _fence(self, tokens, idx, options, env):
    info = tokens[idx].info.strip()
    return _code_block_html(tokens[idx].content, info.split()[0] if info else "", env)


def _code_inline(self, tokens, idx, options, env):
    # The thin spaces sit outside the monospace span, where they stay thin.
    return (f'<span style="background-color:{env["theme"].inline_code_background};">\u2009'
            f'<span style="font-family:{MONO};">{escape(tokens[idx].content, quote=False)}'
            f"</span>\u2009</span>")


def _image(self, tokens, idx, options, env):  # never load images from model output
    src = tokens[idx].attrGet("src") or ""
    alt = escape(self.renderInlineAsText(tokens[idx].children or [], options, env) or src)
    if src.startswith(("http://", "https://")):
        return f'<a href="{escape(src)}">[image: {alt}]</a>'
    return f"[image: {alt}]"


def _cell_open(self, tokens, idx, options, env):
    token = tokens[idx]
    align = (token.attrGet("style") or "").replace("text-align:", "").strip()
    attrs = f' align="{align}"' if align in ("left", "center", "right") else ""
    if token.tag == "th":
        attrs += f' bgcolor="{env["theme"].table_header}"'
    return f"<{token.tag}{attrs}>"


def _make_md(breaks: bool) -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": breaks})
    md.enable("table").enable("strikethrough")
    theme = lambda env: env["theme"]  # noqa: E731
    rules = {  # every rule is called as rule(tokens, idx, options, env)
        "fence": _fence, "code_inline": _code_inline, "image": _image,
        "th_open": _cell_open, "td_open": _cell_open,
        "code_block": lambda _, tk, i, o, env: _code_block_html(tk[i].content, "", env),
        "paragraph_open": lambda _, tk, i, o, env: "" if tk[i].hidden else f'<p style="{_P_STYLE}">',
        "heading_open": lambda _, tk, i, o, env: (
            f'<{tk[i].tag} style="font-size:{_HEADING_SIZES.get(tk[i].tag, "medium")}; '
            f'font-weight:600; margin-top:14px; margin-bottom:6px;">'),
        "bullet_list_open": lambda *_: '<ul style="margin-top:0px; margin-bottom:10px;">\n',
        "ordered_list_open": lambda _, tk, i, o, env: (
            f'<ol start="{int(tk[i].attrGet("start") or 1)}" style="margin-top:0px; '
            f'margin-bottom:10px;">\n'),
        "list_item_open": lambda *_: '<li style="margin-bottom:2px; line-height:130%;">',
        "blockquote_open": lambda _, tk, i, o, env: (  # a two-cell table draws the quote bar
            f'<table cellspacing="0" cellpadding="0" style="margin-top:2px; margin-bottom:10px;">'
            f'<tr><td width="3" bgcolor="{theme(env).border}"></td>'
            f'<td style="padding-left:12px; color:{theme(env).muted};">'),
        "blockquote_close": lambda *_: "</td></tr></table>\n",
        "table_open": lambda _, tk, i, o, env: (
            f'<table border="1" cellspacing="0" cellpadding="6" style="margin-top:4px; '
            f'margin-bottom:12px; border-collapse:collapse; border-color:{theme(env).border}; '
            f'border-style:solid;">\n'),
        "link_open": lambda _, tk, i, o, env: (
            f'<a href="{escape(tk[i].attrGet("href") or "")}" style="color:{theme(env).link};">'),
        "hr": lambda _, tk, i, o, env: f'<hr style="background-color:{theme(env).border};" />\n',
    }
    for name, rule in rules.items():
        md.add_render_rule(name, rule)
    return md


_MD_ASSISTANT = _make_md(breaks=False)
_MD_USER = _make_md(breaks=True)  # people type line breaks and expect to see them


# ------------------------------------------------- incremental markdown
# A streaming reply is re-rendered every few dozen milliseconds. The source is
# split into top-level chunks at blank lines that close every open block, and
# each chunk's HTML is cached, so only the growing tail is parsed again.
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_RE = re.compile(r"^(?:[-+*]|\d{1,9}[.)])(?:\s|$)")
_REFDEF_RE = re.compile(r"^ {0,3}\[[^\]]+\]:", re.MULTILINE)
_COPY_SLOT_RE = re.compile("\x00(\\d+)\x00")  # markdown-it turns NULs in the text into U+FFFD


def split_chunks(text: str) -> list[str]:
    """Split markdown where rendering the parts separately gives the same HTML."""
    if _REFDEF_RE.search(text):  # reference links may point anywhere: keep it whole
        return [text]
    chunks: list[str] = []
    current: list[str] = []
    fence = ""
    after_blank = False
    for line in text.split("\n"):
        if fence:
            match = _FENCE_RE.match(line)
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not line[match.end():].strip():
                fence = ""
            current.append(line)
            continue
        if after_blank and current and line[:1] not in ("", " ", "\t") and not _LIST_RE.match(line):
            chunks.append("\n".join(current) + "\n")
            current = []
        match = _FENCE_RE.match(line)
        if match:
            fence = match.group(1)
        current.append(line)
        after_blank = not line.strip()
    chunks.append("\n".join(current))
    return chunks


@lru_cache(maxsize=1024)
def _render_chunk(src: str, user: bool, theme: Theme) -> tuple[str, tuple[str, ...]]:
    blocks: list[str] = []
    html = (_MD_USER if user else _MD_ASSISTANT).render(src, {"theme": theme, "blocks": blocks})
    return html, tuple(blocks)


def render_markdown(text: str, key: str, theme: Theme, *, user: bool = False) -> tuple[str, list[str]]:
    """Markdown -> (HTML, code blocks); Copy links point at ``copy:KEY:N``."""
    out: list[str] = []
    blocks: list[str] = []
    for chunk in split_chunks(text):
        html, chunk_blocks = _render_chunk(chunk, user, theme)
        if chunk_blocks:
            base = len(blocks)
            html = _COPY_SLOT_RE.sub(lambda m: copy_href(key, base + int(m.group(1))), html)
            blocks.extend(chunk_blocks)
        out.append(html)
    return "".join(out), blocks


_TAIL_RE = re.compile(r"(</(?:p|li|h[1-6])>)((?:\s*</(?:ul|ol|li)>)*\s*)$")


def _add_cursor(body: str, theme: Theme) -> str:
    """Put the streaming cursor inside the last text block, or after the last block."""
    cursor = f'<span style="color:{theme.muted};">{STREAM_CURSOR}</span>'
    match = _TAIL_RE.search(body)
    if match:
        return body[: match.start()] + cursor + match.group(1) + match.group(2)
    return body + f'<p style="{_P_STYLE}">{cursor}</p>'


# ------------------------------------------------------------------ messages
def _small(text: str, color: str, top: int = 4) -> str:
    return (f'<p style="margin-top:{top}px; margin-bottom:0px; font-size:small; '
            f'color:{color};">{escape(text, quote=False)}</p>')


def _versions(msg: MessageDisplay, t: Theme) -> str:
    """‹ 2/3 ›: each arrow is a link where there is a version to go to, muted text at either end."""
    def arrow(symbol: str, step: int, enabled: bool) -> str:
        if not enabled:
            return f'<span style="font-size:large; color:{t.muted};">{symbol}</span>'
        return (f'<a href="{version_href(msg.key, step)}" style="font-size:large; color:{t.link}; font-weight:600; '
                f'text-decoration:none;">&nbsp;{symbol}&nbsp;</a>')
    return (f'<p style="margin-top:6px; margin-bottom:0px; color:{t.muted};">'
            f'{arrow("‹", -1, msg.version > 1)}&nbsp;&nbsp;<span style="font-size:small;">'
            f'{msg.version}&nbsp;/&nbsp;{msg.versions}</span>&nbsp;&nbsp;'
            f'{arrow("›", 1, msg.version < msg.versions)}</p>')


IMAGE_SCHEME = "atelier-image"  # the view serves these from the message's own bytes (MessageView.loadResource)


def image_href(message_key: str, index: int) -> str:
    return f"{IMAGE_SCHEME}:{quote(message_key, safe='')}/{index}"


def parse_image_href(href: str) -> tuple[str, int] | None:
    if not href.startswith(IMAGE_SCHEME + ":"):
        return None
    key, _, index = href[len(IMAGE_SCHEME) + 1:].rpartition("/")
    return (unquote(key), int(index)) if index.isdigit() else None


def _images(msg: MessageDisplay) -> str:
    """The message's attached images, side by side as thumbnails (never loaded from the text: see _image)."""
    tags = "&nbsp;".join(f'<img src="{image_href(msg.key, i)}" alt="attached image {i + 1}">'
                         for i in range(len(msg.images)))
    return f'<p style="margin-top:0px; margin-bottom:8px;">{tags}</p>' if tags else ""


def render_message(msg: MessageDisplay, theme: Theme) -> RenderedMessage:
    """Render one message to a self-contained HTML fragment (a one-cell table)."""
    t = theme
    body, blocks = ("", []) if not msg.content.strip() else \
        render_markdown(msg.content, msg.key, t, user=msg.role == "user")
    if msg.status == "streaming":
        body = _add_cursor(body, t)
    elif not body and msg.role == "assistant" and msg.status == "complete":
        body = _small("(empty reply)", t.muted, top=0)
    if msg.calls:
        from desktop.chat.tool_calls import render_calls

        body = render_calls(msg.calls, msg.key, t) + body
    parts = [_images(msg) + body.rstrip("\n")]
    if msg.sources is not None and msg.status != "streaming":
        from desktop.chat.citations import render_sources

        parts.append(render_sources(msg.sources, msg.key, t))
    if msg.versions > 1 and msg.status != "streaming":
        parts.append(_versions(msg, t))
    if msg.meta:
        parts.append(_small(msg.meta, t.muted))
    if msg.notice:
        parts.append(_small(msg.notice, t.warning))
    if msg.status in STATUS_NOTES:
        color = {"cancelled": t.muted, "error": t.error}.get(msg.status, t.warning)
        parts.append(_small(STATUS_NOTES[msg.status], color))
    role = ROLE_NAMES.get(msg.role, msg.role.title() or "Message")
    header = (f'<p style="margin-top:0px; margin-bottom:6px; font-weight:600; '
              f'color:{t.muted if msg.role == "system" else t.text};">{escape(role)}</p>')
    bubble = f' bgcolor="{t.user_bubble}"' if msg.role == "user" else ""
    # Less padding at the bottom: the last block brings its own bottom margin.
    html = (f'<table width="100%" cellspacing="0" cellpadding="0"{bubble} style="margin-top:4px; '
            f'margin-bottom:4px; color:{t.text};"><tr><td style="padding:14px 14px 6px 14px;">'
            f'{header}{"".join(parts)}</td></tr></table>')
    return RenderedMessage(html=html, code_blocks=blocks)


def render_empty_state(theme: Theme, title: str, body: str) -> str:
    """A centred, muted welcome for an empty conversation (one line per paragraph)."""
    lines = "".join(f'<p align="center" style="margin-top:0px; margin-bottom:6px; '
                    f'color:{theme.muted};">{escape(line, quote=False)}</p>'
                    for line in body.splitlines() if line.strip())
    return (f'<table width="100%" cellspacing="0" cellpadding="0" style="margin-top:150px;">'
            f'<tr><td align="center"><p align="center" style="margin-top:0px; margin-bottom:10px; '
            f'font-size:x-large; font-weight:600; color:{theme.text};">{escape(title, quote=False)}'
            f"</p>{lines}</td></tr></table>")
