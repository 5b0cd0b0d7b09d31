"""Recover what SQLite can still read from a damaged history file, into the live history.

Python's ``sqlite3`` has no ``.recover``, and the ``sqlite3`` command line
cannot be counted on (Windows has none, and Debian's build lacks the
``sqlite_dbpage`` table that ``.recover`` needs). So the damaged file is
read here, table by table and row by row in rowid order: where a damaged
page makes a scan fail, the reader seeks past it (1, 2, 4... rows ahead)
and carries on, so one bad page costs the rows on it, not the rest.

The rows land in a scratch database beside the damaged file first, then
every readable conversation is added to the live history as a new one
(its ids are renumbered; its times kept; the tool calls of each reply's
version on show, with their call ids, and the chat's tool choice come with
it, under the new ids), and rows of other tables that
share the file (the gallery index) are copied back where they are missing.
The damaged file itself is never changed or deleted.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from engines.chat.errors import ChatWriteError, describe
from engines.chat.records import ROLES, STATUSES, Conversation, StoredMessage, dict_from_json, sampling_from_json
from engines.chat.store import BUSY_TIMEOUT_S, ChatStore
from engines.chat.titles import DEFAULT_TITLE, auto_title_from

log = logging.getLogger(__name__)

# Rows keyed by message id are carried with their message (recovered messages get new ids), never copied as is.
CHAT_TABLES = ("conversations", "messages", "reply_versions", "message_images", "tool_calls", "conversation_tools")
_CALL_COLUMNS = ("round, seq, text, call_id, server, tool, arguments_json, status, result, result_json, "
                 "created_at, updated_at")
_MAX_SKIP = 1 << 62


@dataclass(frozen=True)
class SalvageReport:
    conversations: int  # added to the live history
    messages: int
    other_rows: int  # rows of other tables sharing the file (the gallery index)
    source: Path

    def summary(self) -> str:
        if not (self.conversations or self.other_rows):
            return (f"Nothing could be read from {self.source.name}: the file is too damaged. "
                    "It stays where it is.")
        chats = f"{self.conversations:,} chat{'s' if self.conversations != 1 else ''}"
        text = f"Recovered {chats} with {self.messages:,} message{'s' if self.messages != 1 else ''}"
        if self.other_rows:
            text += f" and {self.other_rows:,} gallery entr{'ies' if self.other_rows != 1 else 'y'}"
        return f"{text} from {self.source.name}. The damaged file stays where it is."


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _readable_rows(src: sqlite3.Connection, table: str, columns: list[str]):
    """Every row of ``table`` that can be read, in rowid order, skipping past damaged pages."""
    select = f"SELECT rowid, {', '.join(map(_quote, columns))} FROM {_quote(table)}"
    last = -(1 << 63)
    while True:
        try:
            for row in src.execute(f"{select} WHERE rowid > ? ORDER BY rowid", (last,)):
                last = row[0]
                yield row[1:]
            return
        except sqlite3.DatabaseError:
            pass
        step, row = 1, None
        while row is None:  # seek past the damage: 1, 2, 4... rowids ahead, until a row reads
            if step > _MAX_SKIP or last + step >= 1 << 63:
                return
            try:
                found = src.execute(f"SELECT rowid FROM {_quote(table)} WHERE rowid >= ? ORDER BY rowid LIMIT 1",
                                    (last + step,)).fetchone()
                if found is None:
                    return  # nothing readable after the damage
                row = src.execute(f"{select} WHERE rowid = ?", (found[0],)).fetchone()
            except sqlite3.DatabaseError:
                row = None
            step *= 2
        last = row[0]  # the scan goes on after this row, so every round moves forward
        yield row[1:]


def copy_readable(damaged: Path, scratch: Path) -> None:
    """Copy every readable table row of ``damaged`` into a new database at ``scratch``."""
    try:
        src = sqlite3.connect(f"{damaged.resolve().as_uri()}?mode=ro", uri=True)
        src.execute("PRAGMA writable_schema = ON")  # a broken schema entry no longer hides the good tables
    except sqlite3.Error:
        return
    dst = sqlite3.connect(scratch, isolation_level=None)
    try:
        try:
            tables = src.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                                 "AND name NOT LIKE 'sqlite_%' AND sql IS NOT NULL").fetchall()
            dst.execute(f"PRAGMA user_version = {int(src.execute('PRAGMA user_version').fetchone()[0])}")
        except sqlite3.Error as exc:
            log.warning("nothing readable in %s: %s", damaged, exc)
            return
        dst.execute("BEGIN")
        for name, sql in tables:
            try:
                dst.execute(sql)
                columns = [row[1] for row in src.execute(f"PRAGMA table_info({_quote(name)})")]
            except sqlite3.Error as exc:
                log.warning("table %s of %s cannot be read: %s", name, damaged, exc)
                continue
            insert = (f"INSERT OR IGNORE INTO {_quote(name)} ({', '.join(map(_quote, columns))}) "
                      f"VALUES ({', '.join('?' * len(columns))})")
            for row in _readable_rows(src, name, columns):
                try:
                    dst.execute(insert, row)
                except sqlite3.Error:
                    continue  # a row that breaks its table's own constraints: skip it
        dst.execute("COMMIT")
    finally:
        src.close()
        dst.close()


def _as_float(value, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _images(scratch: sqlite3.Connection) -> dict[int, tuple[bytes, ...]]:
    """The readable attached images of the scratch copy, by (old) message id, in order."""
    if scratch.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'message_images'").fetchone() is None:
        return {}
    found: dict[int, tuple[bytes, ...]] = {}
    for message_id, data in scratch.execute("SELECT message_id, data FROM message_images ORDER BY message_id, seq"):
        if isinstance(data, bytes) and data:
            found[message_id] = found.get(message_id, ()) + (data,)
    return found


def _tool_rows(scratch: sqlite3.Connection) -> tuple[dict[int, list[tuple]], dict[int, tuple]]:
    """(old message id -> the rows of its calls in the version on show, old chat id -> its tool choice row)."""
    names = {row[0] for row in scratch.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    calls: dict[int, list[tuple]] = defaultdict(list)
    settings: dict[int, tuple] = {}
    try:
        if "tool_calls" in names and "messages" in names:
            shown = dict(scratch.execute("SELECT id, version FROM messages"))
            for row in scratch.execute(f"SELECT message_id, version, {_CALL_COLUMNS} FROM tool_calls "
                                       "ORDER BY message_id, seq"):
                if shown.get(row[0], 1) == row[1]:
                    calls[row[0]].append(row[2:])
        if "conversation_tools" in names:
            for row in scratch.execute("SELECT conversation_id, servers_json, json_schema FROM conversation_tools"):
                settings[row[0]] = row[1:]
    except sqlite3.Error as exc:  # an older or damaged layout: the chats come back without their calls
        log.warning("tool calls could not be read back: %s", exc)
    return calls, settings


def _carry_tools(into: ChatStore, new_id: int, old_id: int, found: list[StoredMessage],
                 calls: dict[int, list[tuple]], settings: dict[int, tuple]) -> None:
    """Add the recovered calls of one imported chat under its messages' new ids (call ids kept)."""
    if into.schema_version() < 3 or not (settings.get(old_id) or any(calls.get(m.id) for m in found)):
        return
    new_rows = into._read("SELECT id, version FROM messages WHERE conversation_id = ? ORDER BY position",  # noqa: SLF001
                          (new_id,))
    pairs = zip(sorted(found, key=lambda m: m.position), new_rows)
    with into._write() as db:  # noqa: SLF001 - the store's one transaction helper, shared within engines.chat
        for old, (message_id, version) in pairs:
            db.executemany(f"INSERT INTO tool_calls (message_id, version, {_CALL_COLUMNS}) "
                           f"VALUES (?, ?, {', '.join('?' * 12)})",
                           [(message_id, version, *row) for row in calls.get(old.id, ())])
        if old_id in settings:
            db.execute("INSERT OR REPLACE INTO conversation_tools (conversation_id, servers_json, json_schema) "
                       "VALUES (?, ?, ?)", (new_id, *settings[old_id]))


def _chat_records(scratch: sqlite3.Connection) -> list[tuple[Conversation, list[StoredMessage]]]:
    """The conversations (with their messages) of the scratch copy; messages without one get a new one."""
    names = {row[0] for row in scratch.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conversations: dict[int, Conversation] = {}
    if "conversations" in names:
        for row in scratch.execute("SELECT id, title, created_at, updated_at, model_id, system_prompt, "
                                   "sampling_json, load_json FROM conversations ORDER BY id"):
            created = _as_float(row[2], 0.0)
            conversations[row[0]] = Conversation(
                row[0], str(row[1] or DEFAULT_TITLE), created, _as_float(row[3], created),
                None if row[4] is None else str(row[4]), str(row[5] or ""),
                sampling_from_json(row[6] if isinstance(row[6], str) else None),
                dict_from_json(row[7] if isinstance(row[7], str) else None))
    messages: dict[int, list[StoredMessage]] = defaultdict(list)
    if "messages" in names:
        for row in scratch.execute("SELECT id, conversation_id, position, role, content, status, created_at, "
                                   "updated_at, stats_json, notice FROM messages ORDER BY conversation_id, position"):
            if row[3] not in ROLES:
                continue
            created = _as_float(row[6], 0.0)
            status = row[5] if row[5] in STATUSES else "interrupted"
            messages[row[1]].append(StoredMessage(
                row[0], row[1], int(_as_float(row[2], 0)), row[3], str(row[4] or ""), status, created,
                _as_float(row[7], created), dict_from_json(row[8] if isinstance(row[8], str) else None),
                None if row[9] is None else str(row[9])))
    records = []
    for conversation_id in sorted(set(conversations) | set(messages)):
        found = messages.get(conversation_id, [])
        conversation = conversations.get(conversation_id)
        if conversation is None:  # its row was on a damaged page: name it after its first question
            first_user = next((m.content for m in found if m.role == "user"), "")
            title = auto_title_from(first_user)
            start = min(m.created_at for m in found)
            conversation = Conversation(conversation_id, f"{title} (recovered)" if title != DEFAULT_TITLE
                                        else "Recovered chat", start, max(m.updated_at for m in found),
                                        None, "", None, None)
        records.append((conversation, found))
    return records


def _copy_other_tables(scratch_path: Path, live_path: Path) -> int:
    """Rows of non-chat tables (the gallery index) that the live file lacks; returns how many were added."""
    live = sqlite3.connect(live_path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    added = 0
    try:
        live.execute("ATTACH DATABASE ? AS rec", (str(scratch_path),))
        tables = live.execute("SELECT name, sql FROM rec.sqlite_master WHERE type = 'table' "
                              "AND name NOT LIKE 'sqlite_%' AND sql IS NOT NULL").fetchall()
        live.execute("BEGIN IMMEDIATE")
        for name, sql in tables:
            if name in CHAT_TABLES or name == "lost_and_found":
                continue
            if live.execute("SELECT 1 FROM main.sqlite_master WHERE name = ?", (name,)).fetchone() is None:
                live.execute(sql)
            main_columns = {row[1] for row in live.execute(f"PRAGMA main.table_info({_quote(name)})")}
            columns = [row[1] for row in live.execute(f"PRAGMA rec.table_info({_quote(name)})")
                       if row[1] in main_columns]
            names = ", ".join(map(_quote, columns))
            cursor = live.execute(f"INSERT OR IGNORE INTO main.{_quote(name)} ({names}) "
                                  f"SELECT {names} FROM rec.{_quote(name)}")
            added += max(cursor.rowcount, 0)
        live.execute("COMMIT")
    finally:
        live.close()
    return added


def salvage(damaged: Path, into: ChatStore) -> SalvageReport:
    """Add everything readable in ``damaged`` to ``into``; raises :class:`ChatWriteError` if it cannot be saved."""
    damaged = Path(damaged)
    if not into.writable:
        raise ChatWriteError(into.read_only_reason or "The chat history cannot be written.")
    conversations = messages = other_rows = 0
    try:
        with tempfile.TemporaryDirectory(prefix=".recovering-", dir=into.path.parent) as folder:
            scratch_path = Path(folder) / "readable.sqlite3"
            copy_readable(damaged, scratch_path)
            scratch = sqlite3.connect(scratch_path)
            try:
                records, images = _chat_records(scratch), _images(scratch)
                calls, settings = _tool_rows(scratch)
            finally:
                scratch.close()
            for conversation, found in records:
                new_id = into.import_conversation(conversation, found, images)
                _carry_tools(into, new_id, conversation.id, found, calls, settings)
                conversations += 1
                messages += len(found)
            other_rows = _copy_other_tables(scratch_path, into.path)
    except OSError as exc:
        raise ChatWriteError(f"The damaged chat history could not be read into a new one: {exc.strerror or exc}.") from exc
    except sqlite3.Error as exc:
        raise ChatWriteError(describe(exc, into.path, writing=True)) from exc
    log.info("recovered %d chats, %d messages, %d other rows from %s", conversations, messages, other_rows, damaged)
    return SalvageReport(conversations, messages, other_rows, damaged)
