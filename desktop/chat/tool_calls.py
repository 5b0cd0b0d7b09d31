"""A reply's tool calls as the transcript draws them: name, server, arguments, status, the result folded.

Qt-free, like :mod:`desktop.chat.render`, which puts these boxes inside the
reply they belong to (before its answer: the calls happened first). A call
comes from the live loop (``engines.tools.loop.ToolCall`` in a
``ToolCallEvent``) or from the history (``engines.chat.tool_log.SavedCall``);
both become a :class:`CallDisplay`. The result is folded under a
"Show result" link (``toolcall:KEY:CALL_ID``) that the view turns into
``MessageView.call_toggled``; the page keeps which calls are open.
An image made by Atelier's image tool is shown under its call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from urllib.parse import quote, unquote

CALL_SCHEME = "toolcall"
TOOL_IMAGE_SCHEME = "atelier-toolimage"  # the view loads these from the gallery file named in the call's result
MAX_RESULT_CHARS = 6000  # what an opened result shows; the rest is in the history
MAX_ARGUMENT_CHARS = 600

STATUS_WORDS = {
    "pending": "waiting for your approval",
    "running": "running…",
    "done": "done",
    "error": "error",
    "refused": "refused",
    "invalid": "not run: invalid call",
}


@dataclass(frozen=True)
class CallDisplay:
    call_id: str
    tool: str
    server: str
    arguments_json: str
    status: str
    result: str = ""
    expanded: bool = False
    progress: str = ""  # "3 / 10" while a long call reports progress
    image: str = ""  # a gallery image the call made (Atelier's image tool)


def display_of(call, expanded: bool = False, progress: str = "") -> CallDisplay:
    """A live ToolCall or a SavedCall as the view shows it."""
    tool = getattr(call, "tool", None) or getattr(call, "name", "")
    arguments = call.arguments_json
    return CallDisplay(call.call_id, tool, call.server, arguments, call.status, call.result or "", expanded,
                       progress, image_of(call))


def image_of(call) -> str:
    """The gallery file an image-tool call made, from its structured part or its result line."""
    structured = getattr(call, "structured", None)
    if isinstance(structured, dict) and isinstance(structured.get("image"), str):
        return structured["image"]
    if call.status == "done" and (getattr(call, "tool", None) or getattr(call, "name", "")) == "make_image":
        result = call.result or ""
        start, end = result.rfind("("), result.rfind(")")
        if 0 <= start < end:
            path = result[start + 1:end]
            if path.lower().endswith((".png", ".jpg", ".jpeg", ".webp")):
                return path
    return ""


def call_href(message_key: str, call_id: str) -> str:
    return f"{CALL_SCHEME}:{quote(message_key, safe='')}:{quote(call_id, safe='')}"


def parse_call_href(href: str) -> tuple[str, str] | None:
    """``toolcall:KEY:ID`` -> ``(KEY, ID)``; ``None`` for anything else."""
    if not href.startswith(CALL_SCHEME + ":"):
        return None
    key, sep, call_id = href[len(CALL_SCHEME) + 1:].rpartition(":")
    return (unquote(key), unquote(call_id)) if sep and call_id else None


def tool_image_href(path: str) -> str:
    return f"{TOOL_IMAGE_SCHEME}:{quote(path, safe='')}"


def parse_tool_image_href(href: str) -> str | None:
    return unquote(href[len(TOOL_IMAGE_SCHEME) + 1:]) if href.startswith(TOOL_IMAGE_SCHEME + ":") else None


def pretty_arguments(arguments_json: str) -> str:
    """The arguments as indented JSON (what the approval shows); the text as it is when it is not JSON."""
    try:
        return json.dumps(json.loads(arguments_json), indent=2, ensure_ascii=False)
    except (ValueError, TypeError):
        return arguments_json


def render_calls(calls, message_key: str, theme) -> str:
    """The calls of one reply as boxes, one per call (Qt's rich text: tables and inline styles only)."""
    return "".join(_render_call(call, message_key, theme) for call in calls)


def _status_color(status: str, theme) -> str:
    return {"done": theme.muted, "error": theme.error, "invalid": theme.error, "refused": theme.warning,
            "pending": theme.warning}.get(status, theme.link)


def _render_call(call: CallDisplay, message_key: str, t) -> str:
    where = f"{call.server} · " if call.server else ""
    status = STATUS_WORDS.get(call.status, call.status)
    if call.progress and call.status == "running":
        status = f"running… {call.progress}"
    arguments = call.arguments_json if len(call.arguments_json) <= MAX_ARGUMENT_CHARS else \
        call.arguments_json[:MAX_ARGUMENT_CHARS] + "…"
    head = (f'<p style="margin-top:0px; margin-bottom:2px;"><span style="font-weight:600;">⚙ {escape(call.tool)}</span>'
            f'<span style="color:{t.muted};">&nbsp;&nbsp;{escape(where)}</span>'
            f'<span style="color:{_status_color(call.status, t)};">{escape(status)}</span></p>'
            f'<p style="margin-top:0px; margin-bottom:2px; font-size:small; color:{t.muted};">'
            f'<code>{escape(arguments)}</code></p>')
    body = ""
    if call.result and call.status not in ("pending", "running"):
        label = "▾ Hide result" if call.expanded else "▸ Show result"
        body = (f'<p style="margin-top:0px; margin-bottom:2px; font-size:small;"><a href="'
                f'{call_href(message_key, call.call_id)}" style="color:{t.link}; text-decoration:none;">{label}</a></p>')
        if call.expanded:
            shown = call.result if len(call.result) <= MAX_RESULT_CHARS else \
                call.result[:MAX_RESULT_CHARS] + f"\n… ({len(call.result) - MAX_RESULT_CHARS:,} more characters)"
            body += (f'<pre style="margin-top:2px; margin-bottom:2px; font-size:small; white-space:pre-wrap;">'
                     f'{escape(shown)}</pre>')
    if call.image:
        body += f'<p style="margin-top:4px; margin-bottom:2px;"><img src="{tool_image_href(call.image)}"></p>'
    return (f'<table width="100%" cellspacing="0" cellpadding="0" bgcolor="{t.code_background}" '
            f'style="margin-top:0px; margin-bottom:8px; border-color:{t.border};">'
            f'<tr><td style="padding:6px 10px 4px 10px;">{head}{body}</td></tr></table>')
