"""The chat history's records and how they are stored in SQLite: schema, rows and JSON columns.

``PRAGMA user_version`` counts the applied entries of :data:`MIGRATIONS`.
Each entry moves the schema up one version; a shipped entry is never
edited, a new one is appended. A file whose version is higher than
:data:`SCHEMA_VERSION` comes from a newer Atelier and is only ever read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from engines.api import ChatMessage, SamplingParams

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
STATUSES = ("complete", "streaming", "interrupted", "cancelled", "error")
FINAL_STATUSES = ("complete", "interrupted", "cancelled", "error")
MessageStatus = Literal["complete", "streaming", "interrupted", "cancelled", "error"]

MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY, title TEXT NOT NULL,
            created_at REAL NOT NULL, updated_at REAL NOT NULL, model_id TEXT NULL,
            system_prompt TEXT NOT NULL DEFAULT '', sampling_json TEXT NULL, load_json TEXT NULL)""",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'streaming', 'interrupted', 'cancelled', 'error')),
            created_at REAL NOT NULL, updated_at REAL NOT NULL,
            stats_json TEXT NULL, notice TEXT NULL,
            UNIQUE (conversation_id, position))""",
        "CREATE INDEX conversations_by_update ON conversations(updated_at DESC)",
        "CREATE INDEX messages_by_status ON messages(status)",
    ),
    # 2: Regenerate keeps earlier replies. The messages row always holds the
    # version on show (so the next turn's history, search and exports use it);
    # the others wait in reply_versions, numbered 1, 2, 3... in creation order.
    (
        "ALTER TABLE messages ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
        """CREATE TABLE reply_versions (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            content TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'streaming', 'interrupted', 'cancelled', 'error')),
            created_at REAL NOT NULL, updated_at REAL NOT NULL,
            stats_json TEXT NULL, notice TEXT NULL,
            UNIQUE (message_id, version))""",
    ),
    # 3: Tools. A reply that called tools keeps each call and its result, in order, so the
    # chat shows them under the reply and the next turn re-sends them to the model in its
    # template's tool-call and tool-result form. A call belongs to one version of its reply
    # (Regenerate makes new calls); calls made by one model output share a ``round`` (one
    # assistant message with several calls), and ``text`` is what the model wrote before
    # them. ``arguments_json`` is kept as the model wrote it, valid or not: what was shown
    # for approval is what is saved. ``conversation_tools`` is what a chat has switched
    # on: its tool servers and the JSON schema its replies must follow, if any.
    (
        """CREATE TABLE tool_calls (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            round INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            text TEXT NOT NULL DEFAULT '',
            call_id TEXT NOT NULL,
            server TEXT NOT NULL,
            tool TEXT NOT NULL,
            arguments_json TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'done', 'error', 'refused', 'invalid')),
            result TEXT NOT NULL DEFAULT '',
            result_json TEXT NULL,
            created_at REAL NOT NULL, updated_at REAL NOT NULL,
            UNIQUE (message_id, version, seq))""",
        """CREATE TABLE conversation_tools (
            conversation_id INTEGER PRIMARY KEY REFERENCES conversations(id) ON DELETE CASCADE,
            servers_json TEXT NOT NULL DEFAULT '[]',
            json_schema TEXT NULL)""",
    ),
    # 4: Images a user attached to a message for a vision model, in order, as the encoded
    # bytes that were sent (PNG/JPEG/WebP, already checked): the chat shows them and the
    # next turn sends them again. In the database, not beside it, so a chat and its images
    # are saved, exported and deleted together, in one transaction.
    (
        """CREATE TABLE message_images (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            data BLOB NOT NULL,
            UNIQUE (message_id, seq))""",
    ),
    # 5: Documents. The collection a chat answers from (engines.documents), and the passages
    # each grounded reply was given (file, page, span, score), per version of the reply, so
    # its sources are listed under it when the chat is reopened (engines.chat.citations).
    (
        """CREATE TABLE conversation_documents (
            conversation_id INTEGER PRIMARY KEY REFERENCES conversations(id) ON DELETE CASCADE,
            collection TEXT NOT NULL)""",
        """CREATE TABLE reply_citations (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            collection TEXT NOT NULL,
            mode TEXT NOT NULL,
            notice TEXT NULL,
            citations_json TEXT NOT NULL DEFAULT '[]',
            UNIQUE (message_id, version))""",
    ),
]

SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created_at: float  # seconds since the epoch
    updated_at: float
    model_id: str | None
    system_prompt: str
    sampling: SamplingParams | None  # None: the app's defaults
    load_options: dict[str, Any] | None  # how to load the model, None: the engine chooses


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: int
    position: int  # 0, 1, 2... in the order of the conversation
    role: str
    content: str
    status: str
    created_at: float
    updated_at: float
    stats: dict[str, Any] | None  # e.g. TextResult.to_dict() of the reply
    notice: str | None  # something to show the user next to the message
    version: int = 1  # which of the reply's versions this is (Regenerate adds one)
    versions: int = 1  # how many versions the reply has

    def to_chat_message(self) -> ChatMessage:
        """The message as the engine wants it in a request."""
        return ChatMessage(self.role, self.content)  # type: ignore[arg-type]


def sampling_to_json(sampling: SamplingParams | None) -> str | None:
    return None if sampling is None else json.dumps(asdict(sampling), sort_keys=True)


def sampling_from_json(text: str | None) -> SamplingParams | None:
    """Parse stored settings, keeping only fields this version knows.

    Unknown keys (from a newer version) are dropped and missing ones take
    their defaults, so a settings change never makes old chats unreadable.
    """
    if not text:
        return None
    try:
        data = json.loads(text)
        known = {f.name for f in fields(SamplingParams)}
        return SamplingParams(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError, AttributeError):
        log.warning("ignoring unreadable sampling settings: %r", text[:200])
        return None


def dict_from_json(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        log.warning("ignoring unreadable JSON column: %r", text[:200])
        return None
    return data if isinstance(data, dict) else None


def dict_to_json(data: dict[str, Any] | None) -> str | None:
    # default=str: a stray non-JSON value (a Path, a datetime) must not lose the reply
    return None if data is None else json.dumps(data, default=str, sort_keys=True)


CONVERSATION_COLUMNS = "id, title, created_at, updated_at, model_id, system_prompt, sampling_json, load_json"
_BASE_MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.position, m.role, m.content, m.status, m.created_at, m.updated_at, "
    "m.stats_json, m.notice"
)
MESSAGE_COLUMNS = (
    f"{_BASE_MESSAGE_COLUMNS}, m.version, (SELECT COUNT(*) FROM reply_versions v WHERE v.message_id = m.id) + 1"
)
# A read-only file at schema 1 (it cannot be migrated) has no versions yet.
MESSAGE_COLUMNS_V1 = f"{_BASE_MESSAGE_COLUMNS}, 1, 1"


def conversation_from_row(row: tuple) -> Conversation:
    return Conversation(*row[:6], sampling_from_json(row[6]), dict_from_json(row[7]))


def message_from_row(row: tuple) -> StoredMessage:
    return StoredMessage(*row[:8], stats=dict_from_json(row[8]), notice=row[9], version=row[10], versions=row[11])
