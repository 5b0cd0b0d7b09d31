"""The chat history: conversations and their messages, in one SQLite file.

* Every write commits at once: the user's message is saved *before*
  generation starts and the growing reply about once a second, so a crash
  costs at most the last second of a reply, never the question.
* A reply being written has status ``streaming``. If the app dies mid-reply,
  :meth:`ChatStore.recover_interrupted` marks it ``interrupted`` at the next
  start: the partial text stays visible, marked as cut short.
* ``PRAGMA user_version`` counts the applied entries of :data:`MIGRATIONS`.
* ``check_same_thread=False`` plus one lock around every operation: the store
  can be created on the GUI thread and used from a worker (one at a time).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from os import PathLike
from pathlib import Path
from typing import Any, Iterator, Literal

from engines.api import ChatMessage, SamplingParams

log = logging.getLogger(__name__)

DEFAULT_TITLE = "New chat"
TITLE_MAX_CHARS = 48
ROLES = ("system", "user", "assistant")
STATUSES = ("complete", "streaming", "interrupted", "cancelled", "error")
FINAL_STATUSES = ("complete", "interrupted", "cancelled", "error")
MessageStatus = Literal["complete", "streaming", "interrupted", "cancelled", "error"]

# Each entry moves the schema up one version; never edit a shipped entry,
# append a new one instead. ``user_version`` is the number of entries applied.
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
]

SCHEMA_VERSION = len(MIGRATIONS)


class ChatStoreError(Exception):
    """The database cannot be used (for instance, written by a newer Atelier)."""


class ChatNotFound(LookupError):
    """The conversation or message does not exist (any more)."""


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

    def to_chat_message(self) -> ChatMessage:
        """The message as the engine wants it in a request."""
        return ChatMessage(self.role, self.content)  # type: ignore[arg-type]


def auto_title_from(text: str) -> str:
    """A short title from the first user message: its first non-blank line.

    Whitespace is collapsed and the line is cut at a word boundary where
    possible to at most :data:`TITLE_MAX_CHARS` characters, ending in an
    ellipsis when cut. Blank text gives :data:`DEFAULT_TITLE`.
    """
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = " ".join(line.split())
    if not line:
        return DEFAULT_TITLE
    if len(line) <= TITLE_MAX_CHARS:
        return line
    cut = line[: TITLE_MAX_CHARS - 1]
    space = cut.rfind(" ")
    if space >= TITLE_MAX_CHARS // 2:  # keep whole words unless that loses too much
        cut = cut[:space]
    return cut.rstrip(" .,;:-") + "…"


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


def _dict_from_json(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        log.warning("ignoring unreadable JSON column: %r", text[:200])
        return None
    return data if isinstance(data, dict) else None


def _dict_to_json(data: dict[str, Any] | None) -> str | None:
    # default=str: a stray non-JSON value (a Path, a datetime) must not lose the reply
    return None if data is None else json.dumps(data, default=str, sort_keys=True)


def _like_pattern(term: str) -> str:
    """``%term%`` with LIKE's wildcards in ``term`` escaped (ESCAPE '\\')."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _fold(value: str | None) -> str | None:
    # SQLite's LIKE folds ASCII only; this folds "É" and "ß" as a user expects
    return None if value is None else value.casefold()


_CONVERSATION_COLUMNS = "id, title, created_at, updated_at, model_id, system_prompt, sampling_json, load_json"
_MESSAGE_COLUMNS = "id, conversation_id, position, role, content, status, created_at, updated_at, stats_json, notice"


def _conversation(row: tuple) -> Conversation:
    return Conversation(*row[:6], sampling_from_json(row[6]), _dict_from_json(row[7]))


def _message(row: tuple) -> StoredMessage:
    return StoredMessage(*row[:8], stats=_dict_from_json(row[8]), notice=row[9])


class ChatStore:
    """Conversations and messages in one SQLite file (see the module docstring)."""

    def __init__(self, db_path: str | PathLike[str]) -> None:
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # isolation_level=None: we open transactions ourselves, so nothing is
        # left uncommitted by accident and migrations control their own scope.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0)
        try:
            self._db.create_function("atelier_fold", 1, _fold, deterministic=True)
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: an app crash loses nothing committed; only a power cut
            # may drop the last commits, and the file never corrupts.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    # ---- plumbing ---------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction, under the lock."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # some errors already rolled back
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._lock:
            version = self.schema_version()
            if version > SCHEMA_VERSION:
                raise ChatStoreError(
                    f"The chat history at {self.path} was written by a newer version of "
                    f"Atelier (schema {version}, this version knows {SCHEMA_VERSION})."
                )
            for number in range(version, SCHEMA_VERSION):
                with self._write() as db:
                    for statement in MIGRATIONS[number]:
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {number + 1}")
                log.info("chat history migrated to schema %d", number + 1)

    def schema_version(self) -> int:
        """The ``user_version`` of the file: how many migrations it has had."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> "ChatStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _update_message(self, message_id: int, **values: Any) -> None:
        """Set columns of one message and touch its conversation, in one transaction."""
        now = time.time()
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self._write() as db:
            # a SELECT rather than UPDATE ... RETURNING: older system SQLite lacks it
            row = db.execute("SELECT conversation_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise ChatNotFound(f"no message {message_id}")
            db.execute(
                f"UPDATE messages SET {assignments}, updated_at = ? WHERE id = ?",
                (*values.values(), now, message_id),
            )
            self._touch(db, row[0], now)

    @staticmethod
    def _touch(db: sqlite3.Connection, conversation_id: int, now: float) -> None:
        db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))

    def _update_conversation(self, conversation_id: int, column: str, value: Any) -> None:
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE conversations SET {column} = ?, updated_at = ? WHERE id = ?",
                (value, time.time(), conversation_id),
            )
            if cursor.rowcount == 0:
                raise ChatNotFound(f"no conversation {conversation_id}")

    # ---- conversations ----------------------------------------------------

    def create_conversation(
        self, title: str = DEFAULT_TITLE, model_id: str | None = None,
        system_prompt: str = "", sampling: SamplingParams | None = None,
    ) -> Conversation:
        """A new, empty conversation (it is saved at once)."""
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO conversations (title, created_at, updated_at, model_id, "
                "system_prompt, sampling_json) VALUES (?, ?, ?, ?, ?, ?)",
                (title, now, now, model_id, system_prompt, sampling_to_json(sampling)),
            )
            new_id = int(cursor.lastrowid)
        return self.get_conversation(new_id)

    def list_conversations(self, search: str = "") -> list[Conversation]:
        """All conversations, most recently changed first.

        ``search`` keeps those whose title or any message contains it,
        ignoring case; ``%`` and ``_`` in it are matched literally.
        """
        sql = f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c"
        params: tuple[Any, ...] = ()
        if search.strip():
            pattern = _like_pattern(search.strip().casefold())
            sql += (
                " WHERE atelier_fold(c.title) LIKE ?1 ESCAPE '\\'"
                " OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id"
                " AND atelier_fold(m.content) LIKE ?1 ESCAPE '\\')"
            )
            params = (pattern,)
        sql += " ORDER BY c.updated_at DESC, c.id DESC"
        with self._lock:
            return [_conversation(row) for row in self._db.execute(sql, params)]

    def _one(self, sql: str, key: int, what: str) -> tuple:
        with self._lock:
            row = self._db.execute(sql, (key,)).fetchone()
        if row is None:
            raise ChatNotFound(f"no {what} {key}")
        return row

    def get_conversation(self, conversation_id: int) -> Conversation:
        """The conversation; raises :class:`ChatNotFound` if it is gone."""
        sql = f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?"
        return _conversation(self._one(sql, conversation_id, "conversation"))

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self._update_conversation(conversation_id, "title", title)

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete the conversation and (by cascade) all its messages."""
        with self._write() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def set_conversation_model(self, conversation_id: int, model_id: str | None) -> None:
        """Remember which model this chat uses, so reopening it offers the same one."""
        self._update_conversation(conversation_id, "model_id", model_id)

    def set_system_prompt(self, conversation_id: int, system_prompt: str) -> None:
        self._update_conversation(conversation_id, "system_prompt", system_prompt)

    def set_sampling(self, conversation_id: int, sampling: SamplingParams | None) -> None:
        """Per-chat sampling settings; ``None`` goes back to the defaults."""
        self._update_conversation(conversation_id, "sampling_json", sampling_to_json(sampling))

    def get_sampling(self, conversation_id: int) -> SamplingParams:
        """The settings to generate with: the chat's own, or the defaults."""
        return self.get_conversation(conversation_id).sampling or SamplingParams()

    def set_load_options(self, conversation_id: int, options: dict[str, Any] | None) -> None:
        """Per-chat model load options (context length, GPU layers...) as plain JSON data."""
        self._update_conversation(conversation_id, "load_json", _dict_to_json(options))

    # ---- messages ---------------------------------------------------------

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        """The conversation's messages in order."""
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY position"
        with self._lock:
            rows = self._db.execute(sql, (conversation_id,)).fetchall()
        return [_message(row) for row in rows]

    def get_message(self, message_id: int) -> StoredMessage:
        """The message; raises :class:`ChatNotFound` if it is gone."""
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?"
        return _message(self._one(sql, message_id, "message"))

    def _insert_message(
        self, db: sqlite3.Connection, conversation_id: int, role: str, content: str, status: str
    ) -> int:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        row = db.execute("SELECT title FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise ChatNotFound(f"no conversation {conversation_id}")
        now = time.time()
        sql = "SELECT COALESCE(MAX(position), -1) + 1 FROM messages WHERE conversation_id = ?"
        (position,) = db.execute(sql, (conversation_id,)).fetchone()
        cursor = db.execute(
            "INSERT INTO messages (conversation_id, position, role, content, status, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, position, role, content, status, now, now),
        )
        if role == "user" and row[0] == DEFAULT_TITLE and content.strip():
            db.execute("UPDATE conversations SET title = ? WHERE id = ?", (auto_title_from(content), conversation_id))
        self._touch(db, conversation_id, now)
        return int(cursor.lastrowid)

    def add_message(
        self, conversation_id: int, role: str, content: str, status: MessageStatus = "complete"
    ) -> StoredMessage:
        """Append a message and commit at once.

        The app calls this for the user's message *before* generation starts,
        so the question survives a crash. The first user message of a chat
        still titled :data:`DEFAULT_TITLE` also gives the chat its title.
        """
        with self._write() as db:
            message_id = self._insert_message(db, conversation_id, role, content, status)
        return self.get_message(message_id)

    def begin_reply(self, conversation_id: int) -> int:
        """An empty assistant message with status ``streaming``; returns its id."""
        with self._write() as db:
            return self._insert_message(db, conversation_id, "assistant", "", "streaming")

    def update_reply(self, message_id: int, content: str) -> None:
        """Save the reply so far (cheap; the app calls it about once a second)."""
        self._update_message(message_id, content=content)

    def finish_reply(
        self, message_id: int, content: str, status: MessageStatus = "complete",
        stats: dict[str, Any] | None = None, notice: str | None = None,
    ) -> StoredMessage:
        """Save the final text with how it ended, its figures and any notice."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"a finished reply cannot have status {status!r}")
        self._update_message(
            message_id, content=content, status=status, stats_json=_dict_to_json(stats), notice=notice
        )
        return self.get_message(message_id)

    def edit_message(self, message_id: int, content: str) -> StoredMessage:
        """Replace a message's text (its status and figures stay)."""
        self._update_message(message_id, content=content)
        return self.get_message(message_id)

    def delete_messages_from(self, conversation_id: int, position: int) -> int:
        """Drop the message at ``position`` and all after it; returns how many.

        Regenerate drops the last reply; edit-and-resend drops the edited
        message and everything that followed it, then adds the new version.
        """
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND position >= ?",
                (conversation_id, position),
            )
            if cursor.rowcount:
                self._touch(db, conversation_id, now)
            return cursor.rowcount

    def recover_interrupted(self) -> int:
        """Mark every reply left ``streaming`` by a crash as ``interrupted``.

        Call once at startup, before any generation: the partial text stays
        and the chat shows it was cut short. Returns how many were found.
        """
        with self._write() as db:
            sql = "UPDATE messages SET status = 'interrupted', updated_at = ? WHERE status = 'streaming'"
            cursor = db.execute(sql, (time.time(),))
            return cursor.rowcount
