"""What can go wrong with the chat history, as exceptions whose text is a sentence for the user.

SQLite reports a full disk, a read-only file, an I/O error or a damaged
page as ``sqlite3`` exceptions with a numeric code. The store turns each
into one of the classes below, so the GUI catches :class:`ChatStoreError`
once, shows ``str(error)`` in a banner and carries on: a failed write
never takes the app down, and a failed read never shows stale data.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


class ChatStoreError(Exception):
    """The chat history cannot do what was asked; ``str(error)`` says why, in words."""


class ChatStoreTooNew(ChatStoreError):
    """The file was written by a newer Atelier: it is opened read-only, never migrated or written."""


class ChatReadError(ChatStoreError):
    """A read failed: usually a damaged page; the rest of the history may still be readable."""


class ChatWriteError(ChatStoreError):
    """A write failed (full disk, I/O error, read-only file): nothing was changed."""


class ChatReadOnly(ChatWriteError):
    """The file cannot be written at all (opened read-only, or made read-only under the app)."""


class ChatNotFound(LookupError):
    """The conversation or message does not exist (any more)."""


def sqlite_code(exc: BaseException) -> int | None:
    """SQLite's primary result code (``SQLITE_FULL``...), or None when the exception has none."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


DAMAGED_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
READ_ONLY_CODES = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH})


def is_damaged(exc: BaseException) -> bool:
    """True when SQLite says the file itself is damaged or not a database."""
    if sqlite_code(exc) in DAMAGED_CODES:
        return True
    text = str(exc).lower()  # an older SQLite without codes on the exception
    return "malformed" in text or "not a database" in text


def is_read_only(exc: BaseException) -> bool:
    if isinstance(exc, ChatReadOnly):
        return True
    return sqlite_code(exc) in READ_ONLY_CODES or "readonly database" in str(exc).lower()


def describe(exc: BaseException, path: Path, writing: bool) -> str:
    """One sentence about a failed read or write of the history at ``path``."""
    code = sqlite_code(exc)
    if code == sqlite3.SQLITE_FULL or "disk is full" in str(exc).lower():
        return (f"The disk holding your chats is full ({path.parent}), so the chat could not be saved. "
                "Free some space; Atelier saves again as soon as it can.")
    if is_read_only(exc):
        return (f"The chat history ({path}) is read-only, so nothing new can be saved. "
                "Check the file's permissions.")
    if is_damaged(exc):
        return f"Part of the chat history ({path}) is damaged and cannot be read."
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return "The chat history is busy in another Atelier process; try again in a moment."
    if code == sqlite3.SQLITE_IOERR:
        action = "saved" if writing else "read"
        return (f"The chat history ({path}) could not be {action}: the disk reported an error ({exc}). "
                "The disk may be failing, or the file was made read-only.")
    action = "saved" if writing else "read"
    return f"The chat history ({path}) could not be {action}: {exc}."
