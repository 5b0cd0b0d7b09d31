"""Open the chat history at start-up, whatever state its file is in.

The app must open even when the history cannot be used, and must never
make things worse:

* a damaged file (torn, garbage) or a folder in its place is *set aside*
  (renamed, with its ``-wal``/``-shm`` companions, never deleted) and a
  fresh history is started; :mod:`engines.chat.salvage` can later bring
  back what is still readable;
* a read-only file, or one written by a newer Atelier, is opened
  read-only: the user sees their chats, nothing is migrated or written,
  and every write says why it cannot be done;
* anything else (an I/O error, a full disk before the file exists) gives
  an empty history that refuses writes with the reason, so nothing is
  ever pretended saved.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from engines.chat.errors import ChatStoreError, ChatStoreTooNew, describe, is_damaged, is_read_only
from engines.chat.store import ChatStore
from engines.storage import fsync_folder, set_aside

log = logging.getLogger(__name__)

_COMPANIONS = ("-wal", "-shm")


@dataclass(frozen=True)
class HistoryProblem:
    """Why the history did not open normally, in words for a banner."""

    message: str
    set_aside: Path | None = None  # where the unusable file went; recovery reads it from there
    recoverable: bool = False  # worth offering "Recover what can be read"


def set_history_aside(path: Path) -> Path:
    """Set ``path`` (file or folder) aside with ``engines.storage.set_aside``; its SQLite companions follow.

    ``atelier.sqlite3`` becomes ``atelier.unreadable-<time>.sqlite3``, and its
    ``-wal`` (which may hold committed chats) moves with it under the
    matching name, so SQLite still reads them together.
    """
    target = set_aside(path)
    for extra in _COMPANIONS:
        companion = Path(f"{path}{extra}")
        if companion.exists():
            os.replace(companion, f"{target}{extra}")
    fsync_folder(path.parent)
    log.warning("chat history %s could not be used; set aside as %s", path, target)
    return target


def _read_only(path: Path, reason: str, message: str) -> tuple[ChatStore, HistoryProblem]:
    try:
        store = ChatStore(path, read_only_reason=reason)
    except (sqlite3.Error, ChatStoreError) as exc:
        return _unavailable(path, exc)
    try:
        store.check_readable()
    except ChatStoreError as exc:
        store.close()
        return _unavailable(path, exc.__cause__ or exc)
    return store, HistoryProblem(message)


def _unavailable(path: Path, exc: BaseException) -> tuple[ChatStore, HistoryProblem]:
    detail = describe(exc, path, writing=False) if isinstance(exc, sqlite3.Error) else str(exc)
    message = f"Your chats cannot be opened: {detail} New chats cannot be saved until this is fixed."
    log.error("chat history %s unavailable: %s", path, exc)
    return ChatStore.unavailable(message), HistoryProblem(message)


def _fresh_after_setting_aside(path: Path, why: str, recoverable: bool) -> tuple[ChatStore, HistoryProblem]:
    try:
        aside = set_history_aside(path)
    except OSError as exc:
        return _unavailable(path, ChatStoreError(f"{why} It could not be moved aside: {exc.strerror or exc}."))
    try:
        store = ChatStore(path)
    except (sqlite3.Error, ChatStoreError, OSError) as exc:
        return _unavailable(path, exc)
    message = f"{why} It was set aside as {aside.name}, and new chats go into a fresh history."
    if recoverable:
        message += " Atelier can recover what is still readable in it."
    return store, HistoryProblem(message, aside, recoverable)


def open_history(path: Path) -> tuple[ChatStore, HistoryProblem | None]:
    """The chat history at ``path`` and, when it could not be opened normally, the problem.

    On a normal open, replies left ``streaming`` by a crash are marked
    ``interrupted`` (the caller holds the single-instance lock, so no other
    process is writing them).
    """
    path = Path(path)
    if path.is_dir():
        return _fresh_after_setting_aside(
            path, f"Your chat history could not be read: {path} is a folder, not a file.", recoverable=False)
    try:
        store = ChatStore(path)
    except OSError as exc:  # its folder cannot be made
        return _unavailable(path, ChatStoreError(f"{path.parent} cannot be used: {exc.strerror or exc}."))
    except ChatStoreTooNew as exc:
        return _read_only(path, f"{exc} This version does not change it.",
                          f"{exc} It is shown read-only and left unchanged; update Atelier to chat in it again.")
    except (sqlite3.Error, ChatStoreError) as exc:
        return _diagnose(path, exc)
    try:
        store.check_readable()
        store.recover_interrupted()
    except ChatStoreError as exc:
        store.close()
        return _diagnose(path, exc.__cause__ or exc)
    return store, None


def _diagnose(path: Path, exc: BaseException) -> tuple[ChatStore, HistoryProblem]:
    if is_damaged(exc):
        return _fresh_after_setting_aside(
            path, f"Your chat history could not be read: the file is damaged ({exc}).", recoverable=True)
    if is_read_only(exc):
        reason = (f"The chat history ({path}) is read-only, so nothing new can be saved. "
                  "Check the file's permissions.")
        return _read_only(path, reason, f"{reason} Your chats are shown read-only.")
    return _unavailable(path, exc)
