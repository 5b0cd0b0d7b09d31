"""Collections of documents: adding folders, indexing them through the scheduler, searching, removing.

The front ends' one entry point (see the package docstring for the
guide). Indexing walks the collection's folders here, in the caller's
process, and sends one :class:`IndexFileRequest` per file (again while
the answer says ``partial``) to the documents engine through the
scheduler, so it queues fairly with chat and images and the work happens
in an engine host, which commits every batch. A file whose size and
modification time are those it was indexed with is not read again; one
whose content hash is unchanged is not embedded again; files that left
the disk leave the index.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engines.api import TextLoadSpec
from engines.doc_index.model_profiles import profile_for
from engines.doc_index.passages import OVERLAP_TOKENS, PASSAGE_TOKENS
from engines.doc_index.readers import format_of, unsupported_reason
from engines.doc_index.store import FILE_NAME, Collection, DocumentStore, FileRecord
from engines.doc_index.types import IndexFileRequest, IndexFileResult, SearchRequest, SearchResult
from engines.errors import EngineError, ErrorKind

ENGINE = "documents"
CLIENT = "documents"
EMBEDDING_CONTEXT = 2048  # the engine caps it at the model's trained context: the longest batch of passages
# Failures of the model or the machine end the run; any other failure is the file's, which is skipped.
_RUN_ENDING = frozenset({ErrorKind.MODEL_FILE, ErrorKind.MEMORY, ErrorKind.WONT_FIT, ErrorKind.UNAVAILABLE,
                         ErrorKind.CANCELLED, ErrorKind.CRASHED, ErrorKind.BUSY, ErrorKind.UNSUPPORTED})


@dataclass
class IndexProgress:
    """Where a run stands, after each request: for a progress bar and a time left."""

    files_total: int
    files_done: int = 0
    passages_done: int = 0  # passages embedded by this run
    skipped: int = 0
    current: str = ""
    seconds_left: float | None = None  # None until there is a rate to go by
    last: IndexFileResult | None = None


@dataclass
class IndexSummary:
    collection: str
    files_total: int
    indexed: int = 0  # embedded (or finished) by this run
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    removed: int = 0  # files that left the disk, and the index
    passages: int = 0
    stopped: bool = False  # paused before the end: a new run resumes
    seconds: float = 0.0


class DocumentLibrary:
    """The documents database of a profile, and the scheduler that indexes and searches it."""

    def __init__(self, data_dir: Path, scheduler, *, client: str = CLIENT, threads: int | None = None) -> None:
        self.database = Path(data_dir) / FILE_NAME
        self._scheduler = scheduler
        self._client = client
        self._threads = threads

    def store(self) -> DocumentStore:
        """A connection of this thread's own (sqlite3 connections stay in their thread)."""
        return DocumentStore(self.database)

    # ---- collections ----------------------------------------------------------

    def collections(self) -> list[Collection]:
        with self.store() as store:
            return store.collections()

    def collection(self, name: str) -> Collection:
        with self.store() as store:
            found = store.collection(name)
        if found is None:
            raise EngineError(ErrorKind.NOT_FOUND, f"There is no collection named '{name}'"
                                                   f"{_known(self.collections())}.")
        return found

    def files(self, name: str) -> list[FileRecord]:
        collection = self.collection(name)
        with self.store() as store:
            return store.files(collection)

    def sources(self, name: str) -> list[str]:
        collection = self.collection(name)
        with self.store() as store:
            return store.sources(collection)

    def excluded(self, name: str) -> list[str]:
        """Files and folders taken out of the collection's folders (they stay out until added again)."""
        collection = self.collection(name)
        with self.store() as store:
            return store.excluded(collection)

    def walk(self, name: str) -> tuple[list[str], list[tuple[str, str]]]:
        """The files the collection's folders hold now, less those taken out: what the next index reads."""
        collection = self.collection(name)
        with self.store() as store:
            return walk_sources(store.sources(collection), store.excluded(collection))

    def add(self, name: str, paths: list[str], model_path: str | None = None, model_name: str = "") -> Collection:
        """Create the collection (or add to it) with these folders and files; index it with :meth:`index`.

        ``model_path`` is needed for a new collection; a different one for an
        existing collection changes its model, and every file is embedded again.
        """
        if not name.strip() or len(name) > 100 or any(ch in name for ch in "\n\r\t"):
            raise EngineError(ErrorKind.BAD_INPUT, "A collection name must be 1 to 100 characters on one line.")
        for path in paths:
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                shown = os.fsencode(path).decode("utf-8", "backslashreplace")
                raise EngineError(ErrorKind.BAD_INPUT, f"The path {shown} is not valid UTF-8; rename it, or add "
                                                       "the folder that holds it.") from None
        missing = [p for p in paths if not os.path.lexists(p)]
        if missing:
            raise EngineError(ErrorKind.NOT_FOUND, f"Not found: {missing[0]}" + (
                f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        with self.store() as store:
            collection = store.collection(name)
            if collection is None:
                if not model_path:
                    raise EngineError(ErrorKind.BAD_INPUT, f"The new collection '{name}' needs an embedding model.")
                profile = profile_for(model_path, model_name)
                collection = store.create_collection(
                    name, model_path, model_name or Path(model_path).stem, passage_tokens=PASSAGE_TOKENS,
                    overlap_tokens=OVERLAP_TOKENS, query_prefix=profile.query_prefix,
                    document_prefix=profile.document_prefix, threshold=profile.threshold)
            elif model_path and os.path.abspath(model_path) != os.path.abspath(collection.model_path):
                profile = profile_for(model_path, model_name)
                collection = store.change_model(
                    collection, model_path, model_name or Path(model_path).stem, passage_tokens=PASSAGE_TOKENS,
                    overlap_tokens=OVERLAP_TOKENS, query_prefix=profile.query_prefix,
                    document_prefix=profile.document_prefix, threshold=profile.threshold)
            added = [os.path.abspath(p) for p in paths]
            new = [p for p in added if p not in set(store.sources(collection))]  # not a refresh of a folder it has
            store.add_sources(collection, added)
            store.include(collection, new)  # a file taken out earlier and added again is read again
            return collection

    def remove(self, name: str, paths: list[str] | None = None) -> tuple[int, int]:
        """Remove the collection (its passages and vectors), or only these folders and files: (files, passages) gone."""
        collection = self.collection(name)
        with self.store() as store:
            if not paths:
                return store.remove_collection(collection)
            wanted = [os.path.abspath(p) for p in paths]
            sources = set(store.sources(collection))
            unknown = [p for p in wanted if p not in sources and store.file(collection.id, p) is None
                       and not any(r.path.startswith(p.rstrip(os.sep) + os.sep) for r in store.files(collection))]
            if unknown:
                raise EngineError(ErrorKind.NOT_FOUND, f"'{unknown[0]}' is not part of the collection '{name}'.")
            store.remove_sources(collection, wanted)
            # taken out of a folder the collection keeps: the walk must leave it out, or the next index reads it again
            store.exclude(collection, [p for p in wanted if p not in sources])
            before = store.counts(collection)
            gone = [r.path for r in store.files(collection)
                    if any(r.path == p or r.path.startswith(p.rstrip(os.sep) + os.sep) for p in wanted)]
            store.remove_files(collection, gone)
            after = store.counts(collection)
            store.scrub()
            return before[0] - after[0], before[1] - after[1]

    # ---- indexing ----------------------------------------------------------------

    def index(self, name: str, on_progress: Callable[[IndexProgress], None] | None = None,
              stop: threading.Event | None = None) -> IndexSummary:
        """Bring the collection's index up to date with its folders; ``stop`` pauses between requests.

        Raises the EngineError of a model that cannot load (and CANCELLED
        when the work was cancelled); a file's own failure skips the file.
        """
        started = time.monotonic()
        collection = self.collection(name)
        with self.store() as store:
            found, unreadable_names = walk_sources(store.sources(collection), store.excluded(collection))
            known = {record.path: record for record in store.files(collection)}
            still_there = set(found) | {shown for shown, _ in unreadable_names}
            removed = store.remove_files(collection, [p for p in known if p not in still_there])
            for shown, reason in unreadable_names:
                store.skip(collection.id, shown, reason)
        summary = IndexSummary(name, len(found) + len(unreadable_names), removed=removed,
                               skipped=list(unreadable_names))
        progress = IndexProgress(summary.files_total, files_done=len(unreadable_names),
                                 skipped=len(unreadable_names))
        todo = [path for path in found if not _unchanged(known.get(path))]
        summary.unchanged = len(found) - len(todo)
        progress.files_done += summary.unchanged
        sizes = {path: _size(path) for path in todo}
        bytes_left, bytes_done = sum(sizes.values()), 0
        with self.store() as store:
            for path in todo:
                if stop is not None and stop.is_set():
                    summary.stopped = True
                    break
                progress.current = path
                if format_of(path) is None:
                    store.skip(collection.id, path, unsupported_reason(path))
                    result = IndexFileResult(path, "skipped", reason=unsupported_reason(path))
                else:
                    result = self._index_one(store, collection, path, progress, stop, on_progress)
                    if result is None:
                        summary.stopped = True
                        break
                if result.state == "skipped":
                    summary.skipped.append((path, result.reason))
                    progress.skipped += 1
                elif result.state == "unchanged":
                    summary.unchanged += 1
                else:
                    summary.indexed += 1
                progress.files_done += 1
                bytes_done += sizes[path]
                elapsed = time.monotonic() - started
                if bytes_done and elapsed > 0:
                    progress.seconds_left = (bytes_left - bytes_done) / (bytes_done / elapsed)
                progress.last = result
                if on_progress:
                    on_progress(progress)
        summary.passages = progress.passages_done
        summary.seconds = time.monotonic() - started
        return summary

    def _index_one(self, store: DocumentStore, collection: Collection, path: str, progress: IndexProgress,
                   stop: threading.Event | None, on_progress) -> IndexFileResult | None:
        """Requests for one file until it is done; None when stopped midway (what is stored stays)."""
        while True:
            try:
                result = self._run(collection, IndexFileRequest(str(self.database), collection.id, path))
            except EngineError as exc:
                if exc.kind in _RUN_ENDING:
                    raise
                store.skip(collection.id, path, exc.message)
                return IndexFileResult(path, "skipped", reason=exc.message)
            progress.passages_done += result.embedded
            if result.state != "partial":
                return result
            progress.last = result
            if on_progress:
                on_progress(progress)
            if stop is not None and stop.is_set():
                return None

    # ---- searching -------------------------------------------------------------------

    def query(self, name: str, question: str, top_k: int = 5) -> SearchResult:
        collection = self.collection(name)
        return self._run(collection, SearchRequest(str(self.database), collection.id, question, top_k))

    def _run(self, collection: Collection, request):
        from engines.scheduler import Work

        spec = TextLoadSpec(collection.model_path, context_length=EMBEDDING_CONTEXT, threads=self._threads,
                            embedding=True)
        return self._scheduler.submit(Work(ENGINE, spec, request), self._client, bounded=False).wait()


def walk_sources(sources: list[str], excluded: list[str] = ()) -> tuple[list[str], list[tuple[str, str]]]:
    """The files under the collection's folders (sorted, hidden ones left out), and names that cannot be used.

    *excluded* files and folders (taken out by the user) are left out with everything inside them.

    Symbolic links to folders are not followed (a link loop cannot trap
    the walk); links to files are indexed as the file (a loop is skipped
    by the reader with its reason). A name that is not valid UTF-8 cannot
    be stored or shown exactly: it is listed with its bytes escaped, and skipped.
    """
    found: set[str] = set()
    bad: list[tuple[str, str]] = []

    left_out = set(excluded)

    def consider(path: str) -> None:
        if path in left_out:
            return
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
            bad.append((shown, "the file name is not valid UTF-8; rename the file to index it"))
            return
        found.add(path)

    for source in sources:
        if os.path.isdir(source):
            for folder, dirs, names in os.walk(source, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.join(folder, d) not in left_out)
                for file_name in names:
                    if not file_name.startswith("."):
                        consider(os.path.join(folder, file_name))
        elif os.path.lexists(source):
            consider(source)
    return sorted(found), sorted(bad)


def _unchanged(record: FileRecord | None) -> bool:
    if record is None or record.state != "indexed":
        return False
    try:
        info = os.stat(record.path)
    except OSError:
        return False
    return (info.st_size, info.st_mtime_ns) == (record.size, record.mtime_ns)


def _size(path: str) -> int:
    try:
        return max(1, os.stat(path).st_size)
    except OSError:
        return 1


def _known(collections: list[Collection]) -> str:
    if not collections:
        return " (there are no collections yet: 'atelier docs add NAME PATH...' makes one)"
    return " (collections: " + ", ".join(c.name for c in collections) + ")"


def file_status(record: FileRecord) -> dict:
    """One file as the lists show it.

    ``changed``: indexed, but different on disk now; ``deleted``: gone from
    the disk. The next run updates the one and drops the other.
    """
    state = record.state
    if state in ("indexed", "indexing") and not os.path.lexists(record.path):
        state = "deleted"
    elif state == "indexed" and not _unchanged(record):
        state = "changed"
    elif state == "indexing":
        state = "partial"  # some passages stored; the next run resumes after them
    return {"path": record.path, "state": state, "reason": record.reason, "note": record.note,
            "format": record.format, "pages": record.pages, "passages": record.passages, "size": record.size}
