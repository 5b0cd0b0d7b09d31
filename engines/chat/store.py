"""The chat history: conversations and their messages, in one SQLite file.

* Every write commits at once: the user's message is saved *before*
  generation starts and the growing reply about once a second, so a crash
  costs at most the last second of a reply, never the question.
* A reply being written has status ``streaming``. If the app dies mid-reply,
  :meth:`ChatStore.recover_interrupted` marks it ``interrupted`` at the next
  start: the partial text stays visible, marked as cut short.
* WAL and a busy timeout: the GUI, its chat worker and a command-line
  process share the file; a writer waits for another instead of failing.
* Every SQLite failure leaves as a :class:`ChatReadError` or
  :class:`ChatWriteError` whose text is a sentence for the user, so a full
  disk or a damaged page is a banner, never a crash (see ``errors.py``).
* ``check_same_thread=False`` plus one lock around every operation: the store
  can be created on one thread and used from another (one at a time).
* Opened with ``read_only_reason``, the file is opened read-only and every
  write is refused with that reason (a newer schema, a read-only file).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager, suppress
from os import PathLike
from pathlib import Path
from typing import Any, Iterator

from engines.api import SamplingParams
from engines.chat.errors import (
    ChatNotFound,
    ChatReadError,
    ChatReadOnly,
    ChatStoreError,
    ChatStoreTooNew,
    ChatWriteError,
    describe,
)
from engines.chat.file_flags import any_frozen
from engines.chat.records import (
    CONVERSATION_COLUMNS,
    FINAL_STATUSES,
    MESSAGE_COLUMNS,
    MESSAGE_COLUMNS_V1,
    MIGRATIONS,
    ROLES,
    SCHEMA_VERSION,
    STATUSES,
    Conversation,
    MessageStatus,
    StoredMessage,
    conversation_from_row,
    dict_to_json,
    message_from_row,
    sampling_to_json,
)
from engines.chat.titles import DEFAULT_TITLE, auto_title_from

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0  # how long a write waits for another process's write to end
MEMORY = ":memory:"
_VERSION_COLUMNS = "content, status, created_at, updated_at, stats_json, notice"
_ARCHIVE = f"INSERT INTO reply_versions (message_id, version, {_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def _like_pattern(term: str) -> str:
    """``%term%`` with LIKE's wildcards in ``term`` escaped (ESCAPE '\\')."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _fold(value: str | None) -> str | None:
    # SQLite's LIKE folds ASCII only; this folds "É" and "ß" as a user expects
    return None if value is None else value.casefold()


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Open without ever writing: ``mode=ro``, or ``immutable=1`` where even the WAL index cannot be made."""
    uri = path.resolve().as_uri()
    last: sqlite3.Error | None = None
    for query in ("mode=ro", "immutable=1"):
        db = sqlite3.connect(f"{uri}?{query}", uri=True, check_same_thread=False,
                             isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.Error as exc:
            db.close()
            last = exc
    assert last is not None
    raise last


class ChatStore:
    """Conversations and messages in one SQLite file (see the module docstring)."""

    def __init__(self, db_path: str | PathLike[str], *, read_only_reason: str | None = None) -> None:
        self.path = Path(db_path)
        self.read_only_reason = read_only_reason
        self._lock = threading.RLock()
        memory = self._memory = str(db_path) == MEMORY
        if read_only_reason and not memory:
            self._db = _connect_read_only(self.path)
        else:
            if not memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we open transactions ourselves, so nothing is
            # left uncommitted by accident and migrations control their own scope.
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                       timeout=BUSY_TIMEOUT_S)
        try:
            self._db.create_function("atelier_fold", 1, _fold, deterministic=True)
            if not read_only_reason:
                self._db.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL: an app crash loses nothing committed; only a power cut
                # may drop the last commits, and the file never corrupts.
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            if memory or not read_only_reason:
                self._migrate()
            version = self.schema_version()
            self._message_columns = MESSAGE_COLUMNS if version >= 2 else MESSAGE_COLUMNS_V1
            self._has_images = version >= 4  # a read-only file from before images has none
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def unavailable(cls, reason: str) -> "ChatStore":
        """An empty history that refuses every write with ``reason``: the app runs, nothing is pretended saved."""
        return cls(MEMORY, read_only_reason=reason)

    def another_connection(self) -> "ChatStore":
        """A second connection to the same history, in the same mode (for another thread)."""
        if str(self.path) == MEMORY:
            return ChatStore.unavailable(self.read_only_reason or "The chat history is not available.")
        return ChatStore(self.path, read_only_reason=self.read_only_reason)

    @property
    def writable(self) -> bool:
        return not self.read_only_reason

    # ---- plumbing ---------------------------------------------------------

    def _read(self, sql: str, params: tuple = (), *, one: bool = False) -> Any:
        """Run a query under the lock; any SQLite failure becomes a :class:`ChatReadError`."""
        with self._lock:
            try:
                cursor = self._db.execute(sql, params)
                return cursor.fetchone() if one else cursor.fetchall()
            except sqlite3.Error as exc:
                raise ChatReadError(describe(exc, self.path, writing=False)) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction, under the lock; a failure changes nothing and says why."""
        if self.read_only_reason:
            raise ChatReadOnly(self.read_only_reason)
        if not self._memory and any_frozen(self.path):  # else the write could die of SIGBUS in the WAL index
            raise ChatReadOnly(f"The chat history ({self.path}) is read-only, so nothing new can be saved. "
                                 "Check the file's permissions.")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise ChatWriteError(describe(exc, self.path, writing=True)) from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise ChatWriteError(describe(exc, self.path, writing=True)) from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._db.in_transaction:  # some errors already rolled back
            with suppress(sqlite3.Error):  # a failing disk may refuse this too; SQLite recovers on the next open
                self._db.execute("ROLLBACK")

    def _migrate(self) -> None:
        with self._lock:
            version = self.schema_version()
            if version > SCHEMA_VERSION:
                raise ChatStoreTooNew(
                    f"The chat history at {self.path} was written by a newer version of "
                    f"Atelier (schema {version}, this version knows {SCHEMA_VERSION})."
                )
            for number in range(version, SCHEMA_VERSION):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in MIGRATIONS[number]:
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number + 1}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
                log.info("chat history migrated to schema %d", number + 1)

    def schema_version(self) -> int:
        """The ``user_version`` of the file: how many migrations it has had."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def check_readable(self) -> None:
        """Read the list and count the messages: a torn or garbage file fails here, not later in a view."""
        self._read(f"SELECT {CONVERSATION_COLUMNS} FROM conversations")
        self._read("SELECT COUNT(*) FROM messages")

    @property
    def busy_timeout_ms(self) -> int:
        """How long a write waits for another connection's write (SQLite's busy timeout)."""
        with self._lock:
            return int(self._db.execute("PRAGMA busy_timeout").fetchone()[0])

    @property
    def journal_mode(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

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

    def list_conversations(self, search: str = "", *, titles_only: bool = False) -> list[Conversation]:
        """All conversations, most recently changed first.

        ``search`` keeps those whose title or any message contains it,
        ignoring case; ``%`` and ``_`` in it are matched literally.
        ``titles_only`` searches the titles alone (when messages cannot be read).
        """
        sql = f"SELECT {CONVERSATION_COLUMNS} FROM conversations c"
        params: tuple[Any, ...] = ()
        if search.strip():
            params = (_like_pattern(search.strip().casefold()),)
            sql += " WHERE atelier_fold(c.title) LIKE ?1 ESCAPE '\\'"
            if not titles_only:
                sql += (" OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id"
                        " AND atelier_fold(m.content) LIKE ?1 ESCAPE '\\')")
        sql += " ORDER BY c.updated_at DESC, c.id DESC"
        return [conversation_from_row(row) for row in self._read(sql, params)]

    def _one(self, sql: str, key: int, what: str) -> tuple:
        row = self._read(sql, (key,), one=True)
        if row is None:
            raise ChatNotFound(f"no {what} {key}")
        return row

    def get_conversation(self, conversation_id: int) -> Conversation:
        """The conversation; raises :class:`ChatNotFound` if it is gone."""
        sql = f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?"
        return conversation_from_row(self._one(sql, conversation_id, "conversation"))

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self._update_conversation(conversation_id, "title", title)

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete the conversation and (by cascade) all its messages and their versions."""
        with self._write() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def is_untouched(self, conversation_id: int) -> bool:
        """True for a chat the user has put nothing into: no message, no title, no system prompt."""
        row = self._read(
            "SELECT title, system_prompt, (SELECT COUNT(*) FROM messages WHERE conversation_id = c.id) "
            "FROM conversations c WHERE id = ?", (conversation_id,), one=True)
        return row is not None and row[0] == DEFAULT_TITLE and not row[1].strip() and row[2] == 0

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
        self._update_conversation(conversation_id, "load_json", dict_to_json(options))

    # ---- messages ---------------------------------------------------------

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        """The conversation's messages in order (each reply as the version on show)."""
        sql = f"SELECT {self._message_columns} FROM messages m WHERE m.conversation_id = ? ORDER BY m.position"
        return [message_from_row(row) for row in self._read(sql, (conversation_id,))]

    def get_message(self, message_id: int) -> StoredMessage:
        """The message; raises :class:`ChatNotFound` if it is gone."""
        sql = f"SELECT {self._message_columns} FROM messages m WHERE m.id = ?"
        return message_from_row(self._one(sql, message_id, "message"))

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
        self, conversation_id: int, role: str, content: str, status: MessageStatus = "complete",
        images: tuple[bytes, ...] = (),
    ) -> StoredMessage:
        """Append a message (with the images attached to it) and commit at once.

        The app calls this for the user's message *before* generation starts,
        so the question survives a crash. The first user message of a chat
        still titled :data:`DEFAULT_TITLE` also gives the chat its title.
        """
        with self._write() as db:
            message_id = self._insert_message(db, conversation_id, role, content, status)
            db.executemany("INSERT INTO message_images (message_id, seq, data) VALUES (?, ?, ?)",
                           [(message_id, seq, sqlite3.Binary(data)) for seq, data in enumerate(images)])
        return self.get_message(message_id)

    def images_of(self, conversation_id: int) -> dict[int, tuple[bytes, ...]]:
        """The images attached to the conversation's messages: message id -> its images, in order."""
        if not self._has_images:
            return {}
        rows = self._read("SELECT i.message_id, i.data FROM message_images i JOIN messages m ON m.id = i.message_id "
                          "WHERE m.conversation_id = ? ORDER BY i.message_id, i.seq", (conversation_id,))
        found: dict[int, tuple[bytes, ...]] = {}
        for message_id, data in rows:
            found[message_id] = found.get(message_id, ()) + (bytes(data),)
        return found

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
            message_id, content=content, status=status, stats_json=dict_to_json(stats), notice=notice
        )
        return self.get_message(message_id)

    def edit_message(self, message_id: int, content: str) -> StoredMessage:
        """Replace a message's text (its status and figures stay).

        Editing the first user message of a chat whose title came from it
        gives the chat the new text's title: the list never names a question
        that is no longer there.
        """
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT conversation_id, role, position, content FROM messages WHERE id = ?",
                             (message_id,)).fetchone()
            if row is None:
                raise ChatNotFound(f"no message {message_id}")
            conversation_id, role, position, old = row
            db.execute("UPDATE messages SET content = ?, updated_at = ? WHERE id = ?", (content, now, message_id))
            if role == "user":
                first = db.execute("SELECT MIN(position) FROM messages WHERE conversation_id = ? AND role = 'user'",
                                   (conversation_id,)).fetchone()[0]
                (title,) = db.execute("SELECT title FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
                if first == position and title in (DEFAULT_TITLE, auto_title_from(old)):
                    db.execute("UPDATE conversations SET title = ? WHERE id = ?",
                               (auto_title_from(content), conversation_id))
            self._touch(db, conversation_id, now)
        return self.get_message(message_id)

    def delete_messages_from(self, conversation_id: int, position: int) -> int:
        """Drop the message at ``position`` and all after it; returns how many.

        Edit-and-resend drops everything after the edited message, then asks
        for a new reply; a failed first reply that produced nothing is dropped
        the same way.
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

        Call once at startup, before any generation, and only in the one
        process that writes replies (the GUI holds a single-instance lock):
        the partial text stays and the chat shows it was cut short. Returns
        how many were found.
        """
        with self._write() as db:
            sql = "UPDATE messages SET status = 'interrupted', updated_at = ? WHERE status = 'streaming'"
            cursor = db.execute(sql, (time.time(),))
            return cursor.rowcount

    # ---- reply versions (Regenerate) ----------------------------------------

    def begin_new_version(self, message_id: int) -> int:
        """Regenerate: keep the reply on show as an earlier version; the row becomes an empty, streaming new one.

        Returns ``message_id`` (the reply keeps its id and place). The new
        version's number is one more than any before it.
        """
        now = time.time()
        with self._write() as db:
            row = db.execute(f"SELECT conversation_id, role, version, {_VERSION_COLUMNS} FROM messages WHERE id = ?",
                             (message_id,)).fetchone()
            if row is None:
                raise ChatNotFound(f"no message {message_id}")
            conversation_id, role, version, content, status, *rest = row
            if role != "assistant":
                raise ValueError("only a reply can have versions")
            status = "interrupted" if status == "streaming" else status
            db.execute(_ARCHIVE, (message_id, version, content, status, *rest))
            (top,) = db.execute("SELECT MAX(version) FROM reply_versions WHERE message_id = ?",
                                (message_id,)).fetchone()
            db.execute("UPDATE messages SET content = '', status = 'streaming', stats_json = NULL, notice = NULL, "
                       "version = ?, created_at = ?, updated_at = ? WHERE id = ?", (top + 1, now, now, message_id))
            self._touch(db, conversation_id, now)
        return message_id

    def show_version(self, message_id: int, version: int) -> StoredMessage:
        """Put another version of a reply on show; the next turn's history uses the one on show."""
        with self._write() as db:
            current = db.execute(f"SELECT version, {_VERSION_COLUMNS} FROM messages WHERE id = ?",
                                 (message_id,)).fetchone()
            if current is None:
                raise ChatNotFound(f"no message {message_id}")
            if current[0] != version:
                if current[2] == "streaming":
                    raise ValueError("a reply that is being written cannot switch versions")
                target = db.execute(f"SELECT id, {_VERSION_COLUMNS} FROM reply_versions "
                                    "WHERE message_id = ? AND version = ?", (message_id, version)).fetchone()
                if target is None:
                    raise ChatNotFound(f"no version {version} of message {message_id}")
                db.execute(_ARCHIVE, (message_id, *current))
                self._restore_version(db, message_id, target, version)
        return self.get_message(message_id)

    def drop_current_version(self, message_id: int) -> None:
        """Undo :meth:`begin_new_version` when it produced nothing: the latest earlier version comes back.

        A reply with no earlier version is deleted, like a failed first reply.
        """
        with self._write() as db:
            target = db.execute(f"SELECT id, {_VERSION_COLUMNS}, version FROM reply_versions WHERE message_id = ? "
                                "ORDER BY version DESC LIMIT 1", (message_id,)).fetchone()
            if target is None:
                db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            else:
                self._restore_version(db, message_id, target[:-1], target[-1])

    @staticmethod
    def _restore_version(db: sqlite3.Connection, message_id: int, target: tuple, version: int) -> None:
        """Copy an archived version (``id, content, status, created, updated, stats, notice``) onto the row."""
        archived_id, *values = target
        db.execute("DELETE FROM reply_versions WHERE id = ?", (archived_id,))
        db.execute("UPDATE messages SET content = ?, status = ?, created_at = ?, updated_at = ?, stats_json = ?, "
                   "notice = ?, version = ? WHERE id = ?", (*values, version, message_id))

    # ---- bulk import (recovery) -------------------------------------------

    def import_conversation(self, conversation: Conversation, messages: list[StoredMessage],
                            images: dict[int, tuple[bytes, ...]] | None = None) -> int:
        """Add a whole conversation read from elsewhere (a damaged file), keeping its times; returns its new id.

        A reply left ``streaming`` comes in as ``interrupted``; positions are
        renumbered in order, so gaps left by unreadable messages close up.
        ``images`` (by the messages' old ids) come with their messages.
        """
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO conversations (title, created_at, updated_at, model_id, system_prompt, "
                "sampling_json, load_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation.title, conversation.created_at, conversation.updated_at, conversation.model_id,
                 conversation.system_prompt, sampling_to_json(conversation.sampling),
                 dict_to_json(conversation.load_options)),
            )
            new_id = int(cursor.lastrowid)
            for position, message in enumerate(sorted(messages, key=lambda m: m.position)):
                status = "interrupted" if message.status == "streaming" else message.status
                inserted = db.execute(
                    "INSERT INTO messages (conversation_id, position, role, content, status, created_at, "
                    "updated_at, stats_json, notice) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (new_id, position, message.role, message.content, status, message.created_at,
                     message.updated_at, dict_to_json(message.stats), message.notice),
                ).lastrowid
                db.executemany("INSERT INTO message_images (message_id, seq, data) VALUES (?, ?, ?)",
                               [(inserted, seq, sqlite3.Binary(data))
                                for seq, data in enumerate((images or {}).get(message.id, ()))])
        return new_id


__all__ = [
    "BUSY_TIMEOUT_S", "ChatNotFound", "ChatReadError", "ChatStore", "ChatStoreError", "ChatStoreTooNew",
    "ChatWriteError", "Conversation", "DEFAULT_TITLE", "SCHEMA_VERSION", "StoredMessage", "auto_title_from",
]
