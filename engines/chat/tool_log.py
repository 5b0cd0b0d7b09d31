"""Tool calls in the chat history (schema 3's ``tool_calls`` table), and how later turns re-send them.

A reply that called tools keeps each call, its arguments as the model
wrote them, its status and its result, per version of the reply
(Regenerate makes new calls). A call is saved the moment it appears and
again at each change (pending → running → done), so a crash mid-call
leaves it in the history as it was, like the reply's text.

The next turn's history sends a reply's calls before its text, in the
engine's form (an assistant message with ``tool_calls``, then one ``tool``
message per result), which the model's template or the grammar fallback
renders (engines.tools.fallback.prepare).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engines.api import ChatMessage, ToolCallRequest
from engines.chat.store import ChatStore


@dataclass(frozen=True)
class SavedCall:
    message_id: int
    version: int
    round: int
    seq: int
    call_id: str
    server: str
    tool: str
    arguments_json: str
    status: str
    result: str
    text: str = ""


def save_call(store: ChatStore, message_id: int, version: int, call) -> None:
    """Insert or update one call (an engines.tools.loop.ToolCall) of a reply's version."""
    import json

    now = time.time()
    structured = json.dumps(call.structured, ensure_ascii=False) if call.structured is not None else None
    with store._write() as db:  # noqa: SLF001 - the store's one transaction helper, shared within engines.chat
        db.execute(
            "INSERT INTO tool_calls (message_id, version, round, seq, text, call_id, server, tool, arguments_json, "
            "status, result, result_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (message_id, version, seq) DO UPDATE SET status = excluded.status, "
            "result = excluded.result, result_json = excluded.result_json, updated_at = excluded.updated_at",
            (message_id, version, call.round, call.seq, call.text, call.call_id, call.server, call.name,
             call.arguments_json, call.status, call.result, structured, now, now))


def calls_of(store: ChatStore, message_id: int, version: int) -> list[SavedCall]:
    """The calls of one version of a reply, in order."""
    rows = store._read(  # noqa: SLF001
        "SELECT message_id, version, round, seq, call_id, server, tool, arguments_json, status, result, text "
        "FROM tool_calls WHERE message_id = ? AND version = ? ORDER BY seq", (message_id, version))
    return [SavedCall(*row) for row in rows]


def calls_in(store: ChatStore, conversation_id: int) -> dict[int, list[SavedCall]]:
    """The calls of the versions on show in a conversation: message id -> its calls, in order."""
    rows = store._read(  # noqa: SLF001
        "SELECT t.message_id, t.version, t.round, t.seq, t.call_id, t.server, t.tool, t.arguments_json, t.status, "
        "t.result, t.text FROM tool_calls t JOIN messages m ON m.id = t.message_id AND m.version = t.version "
        "WHERE m.conversation_id = ? ORDER BY t.message_id, t.seq", (conversation_id,))
    found: dict[int, list[SavedCall]] = {}
    for row in rows:
        found.setdefault(row[0], []).append(SavedCall(*row))
    return found


def as_messages(calls: list[SavedCall]) -> list[ChatMessage]:
    """A reply's calls as the engine takes them: per round, the assistant's calls, then each result."""
    import json

    messages: list[ChatMessage] = []
    rounds: dict[int, list[SavedCall]] = {}
    for call in calls:
        rounds.setdefault(call.round, []).append(call)
    for round_calls in rounds.values():
        requests = []
        for call in round_calls:
            try:
                arguments = json.loads(call.arguments_json)
            except ValueError:
                arguments = {}
            requests.append(ToolCallRequest(call.call_id, call.tool, arguments if isinstance(arguments, dict) else {}))
        messages.append(ChatMessage("assistant", round_calls[0].text, tool_calls=tuple(requests)))
        messages += [ChatMessage("tool", call.result, tool_call_id=call.call_id, name=call.tool) for call in round_calls]
    return messages


def set_chat_tools(store: ChatStore, conversation_id: int, servers: list[str], json_schema: dict | None) -> None:
    """What a chat has switched on: its tool servers, and the JSON schema its replies must follow (or None)."""
    import json

    with store._write() as db:  # noqa: SLF001
        db.execute("INSERT INTO conversation_tools (conversation_id, servers_json, json_schema) VALUES (?, ?, ?) "
                   "ON CONFLICT (conversation_id) DO UPDATE SET servers_json = excluded.servers_json, "
                   "json_schema = excluded.json_schema",
                   (conversation_id, json.dumps(list(servers)),
                    None if json_schema is None else json.dumps(json_schema)))


def chat_tools(store: ChatStore, conversation_id: int) -> tuple[list[str], dict | None]:
    """(tool server names, reply schema or None) switched on for a chat; nothing when never set or unreadable."""
    import json

    row = store._read("SELECT servers_json, json_schema FROM conversation_tools WHERE conversation_id = ?",  # noqa: SLF001
                      (conversation_id,), one=True)
    if row is None:
        return [], None
    try:
        servers = [s for s in json.loads(row[0]) if isinstance(s, str)]
    except (ValueError, TypeError):
        servers = []
    try:
        schema = json.loads(row[1]) if row[1] else None
    except ValueError:
        schema = None
    return servers, schema if isinstance(schema, dict) else None
