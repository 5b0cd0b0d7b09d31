"""Export a conversation as Markdown (to read or share) or JSON (to keep).

The JSON layout is a stable, versioned format; later versions only add
keys, and a breaking change bumps ``version``::

    {
      "format": "atelier-chat",
      "version": 1,
      "title": "...",
      "created_at": "2025-01-31T12:00:00+00:00",   # ISO-8601, UTC
      "model_id": "..." | null,
      "system_prompt": "...",
      "sampling": {"temperature": 0.7, ...},       # the settings in effect
      "messages": [
        {"role": "user" | "assistant" | "system",
         "content": "...",
         "status": "complete" | "interrupted" | "cancelled" | "error" | "streaming",
         "created_at": "...",                       # ISO-8601, UTC
         "stats": {...} | null,                     # e.g. tokens, speed, seed
         "images": [{"media_type": "image/png", "data": "<base64>"}],  # only when the message has any
         "tool_calls": [{"id": "...", "round": 1, "server": "time", "tool": "get_current_time",
                         "arguments": {...}, "status": "done" | "error" | "refused" | "invalid" | ...,
                         "result": "...", "text": "..."}],  # only when the reply called tools
         "sources_from": {"collection": "...", "mode": "excerpts" | "full_text" | "nothing",
                          "notice": "..." | null},  # only for a reply grounded in documents
         "sources": [{"number": 1, "path": "...", "page": 2 | null, "start": 0, "end": 120,
                      "score": 0.0164, "similarity": 0.62, "text": "..."}]}  # the same replies; [] if none found
      ]
    }

Images attached to a message (for a vision model) are kept in both: in
the JSON as base64, in the Markdown as ``data:`` images, so an exported
chat is whole in one file. The tools a reply called (engines.chat.tool_log)
come before its answer, as they happened: in the Markdown each call's
arguments and result in fenced blocks, in the JSON as ``tool_calls``.

A reply grounded in documents (engines.chat.citations) keeps where it came
from: the Markdown lists its sources under the answer as the chat shows
them (file name and page, score, similarity; never the folders above the
file nor the passages, which may be long and private), and the JSON keeps
every stored field of each, passage text included, so nothing is lost.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import asdict
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Iterable

from engines.api import SamplingParams
from engines.chat.citations import ReplySources, nothing_found, scores_text, sources_heading, where
from engines.chat.records import Conversation, StoredMessage
from engines.storage import atomic_write_text

EXPORT_FORMAT = "atelier-chat"
EXPORT_VERSION = 1

_ROLE_HEADERS = {"user": "**You**", "assistant": "**Assistant**", "system": "**System**"}
_STATUS_NOTES = {
    "interrupted": "This reply was interrupted: Atelier closed before it finished.",
    "cancelled": "This reply was stopped before it finished.",
    "error": "This reply ended with an error.",
    "streaming": "This reply was still being written when exported.",
}
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


def iso_time(timestamp: float) -> str:
    """Seconds since the epoch as ISO-8601 in UTC (unambiguous across machines)."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


def _open_fence(text: str) -> str | None:
    """The fence left open at the end of ``text``, or None if all are closed.

    A reply cut off mid-code-block would otherwise swallow the rest of the
    exported document into that block.
    """
    open_fence: str | None = None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if not match:
            continue
        fence, rest = match.groups()
        if open_fence is None:
            if not (fence[0] == "`" and "`" in rest):  # a backtick fence's info string has no backticks
                open_fence = fence
        elif fence[0] == open_fence[0] and len(fence) >= len(open_fence) and not rest.strip():
            open_fence = None
    return open_fence


def _blockquote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


def media_type(data: bytes) -> str:
    """The MIME type of an attached image, from its first bytes (they were checked to be one of these)."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/bmp" if data.startswith(b"BM") else "application/octet-stream"


def _data_url(data: bytes) -> str:
    return f"data:{media_type(data)};base64,{base64.b64encode(data).decode('ascii')}"


def calls_for_export(store, conversation_id: int) -> dict[int, list]:
    """The tool calls of a conversation's replies (the versions on show), by message id; none before schema 3."""
    if store.schema_version() < 3:
        return {}
    from engines.chat.tool_log import calls_in

    return calls_in(store, conversation_id)


def _fenced(text: str, info: str = "") -> str:
    """``text`` in a code fence longer than any backtick run inside it, so it can never close the fence early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip(chr(10))}\n{fence}"


def _call_markdown(index: int, call) -> list[str]:
    where = f"`{call.tool}` on {call.server}" if call.server else f"`{call.tool}`"
    try:
        arguments = json.dumps(json.loads(call.arguments_json), ensure_ascii=False, indent=2)
    except ValueError:
        arguments = call.arguments_json
    parts = [call.text.rstrip("\n")] if call.text.strip() else []
    parts += [f"*Tool call {index}: {where} ({call.status})*", _fenced(arguments, "json")]
    if call.result:
        parts += ["Result:", _fenced(call.result)]
    return parts


def _call_data(call) -> dict:
    try:
        arguments = json.loads(call.arguments_json)
    except ValueError:
        arguments = call.arguments_json
    return {"id": call.call_id, "round": call.round, "server": call.server, "tool": call.tool,
            "arguments": arguments, "status": call.status, "result": call.result, "text": call.text}


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")


def _markdown_text(text: str) -> str:
    """``text`` (a file or collection name) shown literally: its Markdown punctuation backslash-escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _sources_markdown(sources: ReplySources) -> list[str]:
    """The sources under a grounded answer: a heading and one line each, or the notice when none was found."""
    if not sources.citations:
        return [f"*{_markdown_text(nothing_found(sources))}*"]
    items = "\n".join(f"- [{c.number}] {_markdown_text(where(c))} · {scores_text(c)}" for c in sources.citations)
    parts = [f"*{_markdown_text(sources_heading(sources))}:*", items]
    if sources.notice:
        parts.append(f"*{_markdown_text(sources.notice)}*")
    return parts


def _sources_data(sources: ReplySources) -> dict:
    return {"sources_from": {"collection": sources.collection, "mode": sources.mode, "notice": sources.notice},
            "sources": [asdict(c) for c in sources.citations]}


def export_markdown(conversation: Conversation, messages: Iterable[StoredMessage],
                    images: dict[int, tuple[bytes, ...]] | None = None, calls: dict[int, list] | None = None,
                    sources: dict[int, ReplySources] | None = None) -> str:
    """The conversation as Markdown; message text (code blocks included) is kept verbatim, images inline.

    ``calls``: a reply's tool calls by message id (:func:`calls_for_export`), shown before its answer;
    ``sources``: a grounded reply's sources by message id (engines.chat.citations.sources_in), listed under it.
    """
    images, calls, sources = images or {}, calls or {}, sources or {}
    title = " ".join(conversation.title.split()) or "Untitled chat"
    parts = [f"# {title}"]
    meta = [f"Started {datetime.fromtimestamp(conversation.created_at).strftime('%Y-%m-%d %H:%M')}"]
    if conversation.model_id:
        meta.append(f"model `{conversation.model_id}`")
    parts.append("*" + " · ".join(meta) + "*")
    if conversation.system_prompt.strip():
        parts.append("> **System prompt**\n>\n" + _blockquote(conversation.system_prompt))
    for message in messages:
        parts.append(_ROLE_HEADERS.get(message.role, f"**{message.role}**"))
        parts += [f"![image {i + 1}]({_data_url(data)})" for i, data in enumerate(images.get(message.id, ()))]
        for index, call in enumerate(calls.get(message.id, ()), start=1):
            parts += _call_markdown(index, call)
        content = message.content.rstrip("\n")
        fence = _open_fence(content)
        if fence is not None:
            content += "\n" + fence
        if content.strip():
            parts.append(content)
        if message.id in sources:
            parts += _sources_markdown(sources[message.id])
        notes = [_STATUS_NOTES[message.status]] if message.status in _STATUS_NOTES else []
        if message.notice:
            notes.append(message.notice)
        for note in notes:
            parts.append(f"*{note}*")
    return "\n\n".join(parts) + "\n"


def export_data(conversation: Conversation, messages: Iterable[StoredMessage],
                images: dict[int, tuple[bytes, ...]] | None = None, calls: dict[int, list] | None = None,
                sources: dict[int, ReplySources] | None = None) -> dict:
    """The JSON export as plain data (see the module docstring for the layout)."""
    sampling = conversation.sampling or SamplingParams()
    images, calls, sources = images or {}, calls or {}, sources or {}
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "title": conversation.title,
        "created_at": iso_time(conversation.created_at),
        "model_id": conversation.model_id,
        "system_prompt": conversation.system_prompt,
        "sampling": asdict(sampling),
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "status": m.status,
                "created_at": iso_time(m.created_at),
                "stats": m.stats,
                **({"images": [{"media_type": media_type(data), "data": base64.b64encode(data).decode("ascii")}
                               for data in images[m.id]]} if images.get(m.id) else {}),
                **({"tool_calls": [_call_data(call) for call in calls[m.id]]} if calls.get(m.id) else {}),
                **(_sources_data(sources[m.id]) if m.id in sources else {}),
            }
            for m in messages
        ],
    }


def export_json(conversation: Conversation, messages: Iterable[StoredMessage],
                images: dict[int, tuple[bytes, ...]] | None = None, calls: dict[int, list] | None = None,
                sources: dict[int, ReplySources] | None = None) -> str:
    """The conversation as JSON text: UTF-8 friendly, indented, keys in a fixed order."""
    data = export_data(conversation, messages, images, calls, sources)
    return json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n"


def suggested_filename(conversation: Conversation, extension: str) -> str:
    """A file name from the title that is safe on Windows, macOS and Linux."""
    stem = re.sub(r'[<>:"/\\|?*\x00-\x1f]+', " ", conversation.title)
    stem = " ".join(stem.split()).strip(" .")[:80] or "chat"
    return f"{stem}.{extension.lstrip('.')}"


def write_export(path: str | PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8, all of it or nothing (``engines.storage``'s one atomic write).

    A crash or a full disk leaves either the old file or the new one, never
    half an export.
    """
    return atomic_write_text(path, text)
