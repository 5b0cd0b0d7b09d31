"""The documents database: collections, their files, passages, vectors and the keyword index, in one SQLite file.

It is ``documents.sqlite3`` in the app's data folder, beside the chat
history's ``atelier.sqlite3`` but separate from it, for three reasons:
the chat store owns that file's ``user_version`` migrations and its
"recover what can be read" path, and an index is a different kind of data
(derived from the user's files and rebuilt from them, so a damaged index
is set aside and started again without a question); the indexer writes
thousands of rows a minute from an engine-host process, which would
otherwise contend with chat saves for one write lock; and removing every
collection never touches a chat.

- **Durable as it goes.** WAL journal, ``synchronous=NORMAL`` (a commit
  survives a crash of the process; a power cut may lose the last
  commits, never consistency), a busy timeout so the engine host and the
  front end share it, and every write in a ``BEGIN IMMEDIATE``
  transaction (a reader upgrading to a writer would get SQLITE_BUSY
  without waiting). Passages are unique per (file, ordinal), so a
  resumed file can never store a passage twice.
- **Keywords** come from an FTS5 table over the passages' text (external
  content, kept in step by triggers; FTS5 is compiled into the SQLite that
  Python ships on all three systems, unlike loadable extensions).
- **Vectors** are float32 blobs in the passage rows (searched with numpy,
  :mod:`engines.doc_index.search`).
- **Private when removed.** ``secure_delete`` overwrites deleted rows,
  and removing a collection merges the keyword index (so its words leave
  the index too) and checkpoints the WAL, so no passage of a removed
  collection stays readable in the files.

Connections are per thread (sqlite3's default): each thread that needs
the database opens its own :class:`DocumentStore`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from engines.errors import EngineError, ErrorKind
from engines.storage import set_aside

log = logging.getLogger(__name__)

FILE_NAME = "documents.sqlite3"
SCHEMA_VERSION = 2  # 2: the excluded table (files taken out of an added folder)
BUSY_TIMEOUT_MS = 30_000

# Files and folders the user took out of a folder the collection holds: the walk leaves them out until they are
# added again (without it, a removed file would come back at the next index while it sits in that folder).
_EXCLUDED_TABLE = """CREATE TABLE excluded(
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    PRIMARY KEY(collection_id, path)
)"""
# One statement each: executescript() would commit the transaction that creates them.
_SCHEMA = (
    """CREATE TABLE collections(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    model_path TEXT NOT NULL,
    model_name TEXT NOT NULL,
    dimensions INTEGER,
    passage_tokens INTEGER NOT NULL,
    overlap_tokens INTEGER NOT NULL,
    query_prefix TEXT NOT NULL DEFAULT '',
    document_prefix TEXT NOT NULL DEFAULT '',
    threshold REAL NOT NULL,
    created_at REAL NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE sources(
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    PRIMARY KEY(collection_id, path)
)""",
    _EXCLUDED_TABLE,
    """CREATE TABLE files(
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    size INTEGER,
    mtime_ns INTEGER,
    sha256 TEXT,
    format TEXT,
    pages INTEGER,
    passages INTEGER NOT NULL DEFAULT 0,
    characters INTEGER NOT NULL DEFAULT 0,
    indexed_at REAL,
    UNIQUE(collection_id, path)
)""",
    """CREATE TABLE passages(
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    page INTEGER,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE(file_id, ordinal)
)""",
    """CREATE INDEX files_by_collection ON files(collection_id, state)""",
    """CREATE VIRTUAL TABLE passages_fts USING fts5(
    text, content='passages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
)""",
    """CREATE TRIGGER passages_added AFTER INSERT ON passages BEGIN
    INSERT INTO passages_fts(rowid, text) VALUES (new.id, new.text);
END""",
    """CREATE TRIGGER passages_removed AFTER DELETE ON passages BEGIN
    INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', old.id, old.text);
END""",
)


@dataclass(frozen=True)
class Collection:
    """A named set of folders and files, indexed with one embedding model (which it remembers)."""

    id: int
    name: str
    model_path: str
    model_name: str
    dimensions: int | None  # known once the first passage is embedded
    passage_tokens: int
    overlap_tokens: int
    query_prefix: str
    document_prefix: str
    threshold: float  # the cosine similarity a passage needs to count as relevant
    created_at: float
    revision: int  # bumped by every change to its passages: search caches key on it


@dataclass(frozen=True)
class FileRecord:
    """One file of a collection and where it stands.

    ``state``: ``pending`` (found, not indexed yet), ``indexing`` (some of
    its passages are stored; the rest follow on the next run), ``indexed``,
    ``skipped`` (``reason`` says why).
    """

    id: int
    collection_id: int
    path: str
    state: str
    reason: str
    note: str
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    format: str | None
    pages: int | None
    passages: int
    characters: int
    indexed_at: float | None


@dataclass(frozen=True)
class NewPassage:
    ordinal: int
    page: int | None
    start: int
    end: int
    tokens: int
    text: str
    vector: bytes  # float32, little-endian


class DocumentStore:
    """One connection to the documents database (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.problem: str | None = None  # set when a damaged database was set aside
        self._db = self._open()

    # ---- opening ----------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if _is_locked(exc):
                raise EngineError(ErrorKind.BUSY, "The documents database is busy in another Atelier process; "
                                                  "try again in a moment.") from None
            kept = set_aside(self.path)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(OSError):
                    Path(f"{self.path}{suffix}").unlink()
            self.problem = (f"The documents index ({self.path.name}) could not be read ({exc}). It was kept as "
                            f"{kept.name} and a new, empty index was started: add your folders again.")
            log.warning("%s", self.problem)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA secure_delete = ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise EngineError(ErrorKind.UNSUPPORTED, f"The documents index ({self.path}) was made by a newer "
                                                         "Atelier; update Atelier to use it.")
            if version == 0:
                with _immediate(db):
                    if db.execute("PRAGMA user_version").fetchone()[0] == 0:  # another process may have won
                        for statement in _SCHEMA:
                            db.execute(statement)
                        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version == 1:
                with _immediate(db):
                    if db.execute("PRAGMA user_version").fetchone()[0] == 1:  # another process may have won
                        db.execute(_EXCLUDED_TABLE)
                        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM collections").fetchone()  # a file that is not a database fails here
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "DocumentStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: it waits for the write lock instead of failing later)."""
        with _immediate(self._db):
            yield self._db

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the search modules' reads."""
        return self._db

    # ---- collections ------------------------------------------------------

    def collections(self) -> list[Collection]:
        return [_collection(row) for row in self._db.execute("SELECT * FROM collections ORDER BY name")]

    def collection(self, name: str) -> Collection | None:
        row = self._db.execute("SELECT * FROM collections WHERE name = ?", (name,)).fetchone()
        return _collection(row) if row else None

    def collection_by_id(self, collection_id: int) -> Collection | None:
        row = self._db.execute("SELECT * FROM collections WHERE id = ?", (collection_id,)).fetchone()
        return _collection(row) if row else None

    def create_collection(self, name: str, model_path: str, model_name: str, *, passage_tokens: int,
                          overlap_tokens: int, query_prefix: str, document_prefix: str, threshold: float) -> Collection:
        with self.write() as db:
            db.execute(
                "INSERT INTO collections(name, model_path, model_name, passage_tokens, overlap_tokens, query_prefix,"
                " document_prefix, threshold, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, model_path, model_name, passage_tokens, overlap_tokens, query_prefix, document_prefix,
                 threshold, time.time()))
        return self.collection(name)

    def change_model(self, collection: Collection, model_path: str, model_name: str, *, passage_tokens: int,
                     overlap_tokens: int, query_prefix: str, document_prefix: str, threshold: float) -> Collection:
        """Index the collection with another model: every passage goes, every file is indexed again."""
        with self.write() as db:
            db.execute("DELETE FROM passages WHERE file_id IN (SELECT id FROM files WHERE collection_id = ?)",
                       (collection.id,))
            db.execute("UPDATE files SET state = 'pending', sha256 = NULL, passages = 0, indexed_at = NULL "
                       "WHERE collection_id = ? AND state != 'skipped'", (collection.id,))
            db.execute("UPDATE collections SET model_path = ?, model_name = ?, dimensions = NULL, passage_tokens = ?,"
                       " overlap_tokens = ?, query_prefix = ?, document_prefix = ?, threshold = ?,"
                       " revision = revision + 1 WHERE id = ?",
                       (model_path, model_name, passage_tokens, overlap_tokens, query_prefix, document_prefix,
                        threshold, collection.id))
        return self.collection_by_id(collection.id)

    def remove_collection(self, collection: Collection) -> tuple[int, int]:
        """Delete the collection, its files, passages and vectors; (files, passages) it had."""
        files, passages = self.counts(collection)
        with self.write() as db:
            db.execute("DELETE FROM collections WHERE id = ?", (collection.id,))  # cascades to files and passages
        self.scrub()
        return files, passages

    def scrub(self) -> None:
        """Make deleted passages unreadable: merge the keyword index and move the WAL into the database."""
        with self.write() as db:
            db.execute("INSERT INTO passages_fts(passages_fts) VALUES ('optimize')")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ---- sources (the folders and files the user added) --------------------

    def add_sources(self, collection: Collection, paths: Iterable[str]) -> None:
        with self.write() as db:
            db.executemany("INSERT OR IGNORE INTO sources(collection_id, path) VALUES (?, ?)",
                           [(collection.id, p) for p in paths])

    def sources(self, collection: Collection) -> list[str]:
        rows = self._db.execute("SELECT path FROM sources WHERE collection_id = ? ORDER BY path", (collection.id,))
        return [row[0] for row in rows]

    def remove_sources(self, collection: Collection, paths: Iterable[str]) -> None:
        with self.write() as db:
            db.executemany("DELETE FROM sources WHERE collection_id = ? AND path = ?",
                           [(collection.id, p) for p in paths])

    def exclude(self, collection: Collection, paths: Iterable[str]) -> None:
        """Leave these files or folders out of the walk of the collection's folders."""
        with self.write() as db:
            db.executemany("INSERT OR IGNORE INTO excluded(collection_id, path) VALUES (?, ?)",
                           [(collection.id, p) for p in paths])

    def excluded(self, collection: Collection) -> list[str]:
        rows = self._db.execute("SELECT path FROM excluded WHERE collection_id = ? ORDER BY path", (collection.id,))
        return [row[0] for row in rows]

    def include(self, collection: Collection, paths: Iterable[str]) -> None:
        """Added again: these paths, and everything excluded inside them, are walked again."""
        with self.write() as db:
            for path in paths:
                inside = path.rstrip(os.sep) + os.sep
                db.execute("DELETE FROM excluded WHERE collection_id = ? AND (path = ? OR substr(path, 1, ?) = ?)",
                           (collection.id, path, len(inside), inside))

    # ---- files --------------------------------------------------------------

    def files(self, collection: Collection) -> list[FileRecord]:
        rows = self._db.execute("SELECT * FROM files WHERE collection_id = ? ORDER BY path", (collection.id,))
        return [_file(row) for row in rows]

    def file(self, collection_id: int, path: str) -> FileRecord | None:
        row = self._db.execute("SELECT * FROM files WHERE collection_id = ? AND path = ?",
                               (collection_id, path)).fetchone()
        return _file(row) if row else None

    def note_found(self, collection: Collection, paths: Iterable[str]) -> None:
        """Files found on disk: new ones are ``pending``; known ones keep their state."""
        with self.write() as db:
            db.executemany("INSERT OR IGNORE INTO files(collection_id, path, state) VALUES (?, ?, 'pending')",
                           [(collection.id, p) for p in paths])

    def skip(self, collection_id: int, path: str, reason: str, *, size: int | None = None,
             mtime_ns: int | None = None, format: str | None = None) -> None:
        """Record that a file cannot be indexed, and why; whatever was indexed of it before goes."""
        with self.write() as db:
            row = db.execute("SELECT id, passages FROM files WHERE collection_id = ? AND path = ?",
                             (collection_id, path)).fetchone()
            if row is None:
                db.execute("INSERT INTO files(collection_id, path, state, reason, size, mtime_ns, format)"
                           " VALUES (?, ?, 'skipped', ?, ?, ?, ?)", (collection_id, path, reason, size, mtime_ns, format))
                return
            removed = db.execute("DELETE FROM passages WHERE file_id = ?", (row[0],)).rowcount
            db.execute("UPDATE files SET state = 'skipped', reason = ?, note = '', size = ?, mtime_ns = ?, format = ?,"
                       " sha256 = NULL, passages = 0, pages = NULL, characters = 0, indexed_at = NULL WHERE id = ?",
                       (reason, size, mtime_ns, format, row[0]))
            if removed:
                _bump(db, collection_id)

    def touch(self, file_id: int, size: int, mtime_ns: int) -> None:
        """The same content under a new modification time: remember the time, keep the passages."""
        with self.write() as db:
            db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", (size, mtime_ns, file_id))

    def begin_file(self, collection_id: int, path: str, *, sha256: str, size: int, mtime_ns: int, format: str,
                   pages: int | None, characters: int, note: str) -> tuple[int, int]:
        """Start (or resume) indexing this content of ``path``: (the file's id, passages already stored).

        Passages stored for the same content (a run that stopped midway) are
        kept and the caller resumes after them; passages of other content go.
        """
        with self.write() as db:
            row = db.execute("SELECT id, state, sha256 FROM files WHERE collection_id = ? AND path = ?",
                             (collection_id, path)).fetchone()
            if row is None:
                cursor = db.execute("INSERT INTO files(collection_id, path, state) VALUES (?, ?, 'pending')",
                                    (collection_id, path))
                file_id, state, old_sha = cursor.lastrowid, "pending", None
            else:
                file_id, state, old_sha = row
            if state in ("indexing", "indexed") and old_sha == sha256:
                stored = db.execute("SELECT count(*) FROM passages WHERE file_id = ?", (file_id,)).fetchone()[0]
            else:
                if db.execute("DELETE FROM passages WHERE file_id = ?", (file_id,)).rowcount:
                    _bump(db, collection_id)
                stored = 0
            db.execute("UPDATE files SET state = 'indexing', reason = '', note = ?, sha256 = ?, size = ?, mtime_ns = ?,"
                       " format = ?, pages = ?, characters = ?, passages = ?, indexed_at = NULL WHERE id = ?",
                       (note, sha256, size, mtime_ns, format, pages, characters, stored, file_id))
        return file_id, stored

    def add_passages(self, collection_id: int, file_id: int, passages: list[NewPassage], dimensions: int) -> None:
        """Store embedded passages of a file in one transaction (and the collection's dimension, the first time)."""
        with self.write() as db:
            known = db.execute("SELECT dimensions FROM collections WHERE id = ?", (collection_id,)).fetchone()
            if known is None:
                raise EngineError(ErrorKind.BAD_INPUT, "The collection was removed while it was being indexed.")
            if known[0] is None:
                db.execute("UPDATE collections SET dimensions = ? WHERE id = ?", (dimensions, collection_id))
            elif known[0] != dimensions:
                raise EngineError(ErrorKind.BAD_INPUT, f"The embedding model gives {dimensions}-wide vectors, but the "
                                                       f"collection holds {known[0]}-wide ones.")
            # OR IGNORE: two indexers on one file (the window and 'atelier docs add') embed the same passages;
            # the first to commit stores each one, the other's copy is dropped instead of failing the file.
            db.executemany(
                "INSERT OR IGNORE INTO passages(file_id, ordinal, page, char_start, char_end, tokens, text, vector)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(file_id, p.ordinal, p.page, p.start, p.end, p.tokens, p.text, p.vector) for p in passages])
            db.execute("UPDATE files SET passages = (SELECT count(*) FROM passages WHERE file_id = ?) WHERE id = ?",
                       (file_id, file_id))
            _bump(db, collection_id)

    def finish_file(self, file_id: int) -> None:
        with self.write() as db:
            db.execute("UPDATE files SET state = 'indexed', indexed_at = ? WHERE id = ?", (time.time(), file_id))

    def remove_files(self, collection: Collection, paths: Iterable[str]) -> int:
        """Forget these files (deleted from disk, or removed by the user); their passages go. How many went."""
        removed = 0
        with self.write() as db:
            for path in paths:
                removed += db.execute("DELETE FROM files WHERE collection_id = ? AND path = ?",
                                      (collection.id, path)).rowcount
            if removed:
                _bump(db, collection.id)
        return removed

    # ---- figures and passages -------------------------------------------------

    def counts(self, collection: Collection) -> tuple[int, int]:
        """(files, passages) of the collection."""
        files = self._db.execute("SELECT count(*), coalesce(sum(passages), 0) FROM files WHERE collection_id = ?",
                                 (collection.id,)).fetchone()
        return int(files[0]), int(files[1])

    def passages_of(self, file_id: int) -> list[tuple[int | None, int, int, str]]:
        """(page, start, end, text) of a file's passages, in order."""
        rows = self._db.execute("SELECT page, char_start, char_end, text FROM passages WHERE file_id = ? ORDER BY ordinal",
                                (file_id,))
        return [tuple(row) for row in rows]

    def revision(self, collection_id: int) -> int | None:
        row = self._db.execute("SELECT revision FROM collections WHERE id = ?", (collection_id,)).fetchone()
        return int(row[0]) if row else None


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _bump(db: sqlite3.Connection, collection_id: int) -> None:
    db.execute("UPDATE collections SET revision = revision + 1 WHERE id = ?", (collection_id,))


def _is_locked(exc: sqlite3.DatabaseError) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _collection(row) -> Collection:
    return Collection(*row)


def _file(row) -> FileRecord:
    return FileRecord(*row)
