"""Documents in the chat history (schema 5): the collection a chat answers from, and each grounded reply's sources.

A chat attached to a document collection keeps the collection's name in
``conversation_documents``, so it stays attached when the chat is
reopened (a name, not an id: a collection removed and made again under
the same name is still the one the user meant). Every reply grounded in
it keeps the passages it was given (file, page, character span, score,
text) in ``reply_citations``, per version of the reply, so the sources
are listed under the answer after a restart exactly as they were when it
was written, even if the files changed since. Kept beside the store, like
``tool_log``, so ``store.py`` stays about messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engines.chat.store import ChatStore

CITATIONS_SCHEMA = 5  # the first schema with these tables


@dataclass(frozen=True)
class SavedCitation:
    number: int  # [1], [2]... as the model was given them
    path: str
    page: int | None  # 1-based, PDF only
    start: int
    end: int
    score: float
    similarity: float
    text: str


@dataclass(frozen=True)
class ReplySources:
    """What one grounded reply was given: its collection, how (``excerpts``, ``full_text``, ``nothing``), passages."""

    collection: str
    mode: str
    notice: str | None
    citations: tuple[SavedCitation, ...]


WHOLE_COLLECTION = "the whole collection was given to the model"


def where(citation: SavedCitation) -> str:
    """``notes.md, page 2``: the file's name, and its page for a PDF (never the folders above it)."""
    return Path(citation.path).name + (f", page {citation.page}" if citation.page else "")


def scores_text(citation: SavedCitation) -> str:
    """``score 0.0164 · similarity 0.62``, as the chat shows them and the Markdown export writes them."""
    return f"score {citation.score:.4f} · similarity {citation.similarity:.2f}"


def sources_heading(sources: ReplySources) -> str:
    """``Sources from 'Taxes'``, saying so when the whole collection was given instead of excerpts."""
    whole = f" ({WHOLE_COLLECTION})" if sources.mode == "full_text" else ""
    return f"Sources from '{sources.collection}'{whole}"


def nothing_found(sources: ReplySources) -> str:
    """What is shown instead of a list when no passage was given to the model."""
    return sources.notice or f"Nothing relevant was found in '{sources.collection}'."


def _has_tables(store: ChatStore) -> bool:
    return store.schema_version() >= CITATIONS_SCHEMA


def set_chat_collection(store: ChatStore, conversation_id: int, collection: str | None) -> None:
    """Attach a collection to a chat (None detaches it)."""
    with store._write() as db:  # noqa: SLF001 - the store's one transaction helper, shared within engines.chat
        if collection:
            db.execute("INSERT INTO conversation_documents (conversation_id, collection) VALUES (?, ?) "
                       "ON CONFLICT (conversation_id) DO UPDATE SET collection = excluded.collection",
                       (conversation_id, collection))
        else:
            db.execute("DELETE FROM conversation_documents WHERE conversation_id = ?", (conversation_id,))


def chat_collection(store: ChatStore, conversation_id: int) -> str | None:
    """The collection attached to a chat, or None."""
    if not _has_tables(store):
        return None
    row = store._read("SELECT collection FROM conversation_documents WHERE conversation_id = ?",  # noqa: SLF001
                      (conversation_id,), one=True)
    return row[0] if row else None


def save_sources(store: ChatStore, message_id: int, version: int, collection: str, grounding) -> None:
    """Keep what a reply was grounded in (an engines.documents.Grounding), replacing an earlier record of it."""
    citations = [{"number": number, "path": hit.path, "page": hit.page, "start": hit.start, "end": hit.end,
                  "score": hit.score, "similarity": hit.similarity, "text": hit.text}
                 for number, hit in enumerate(grounding.citations, start=1)]
    with store._write() as db:  # noqa: SLF001
        db.execute("INSERT INTO reply_citations (message_id, version, collection, mode, notice, citations_json) "
                   "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, version) DO UPDATE SET "
                   "collection = excluded.collection, mode = excluded.mode, notice = excluded.notice, "
                   "citations_json = excluded.citations_json",
                   (message_id, version, collection, grounding.mode, grounding.notice or None,
                    json.dumps(citations, ensure_ascii=False)))


def sources_in(store: ChatStore, conversation_id: int) -> dict[int, ReplySources]:
    """The sources of the reply versions on show in a conversation, by message id."""
    if not _has_tables(store):
        return {}
    rows = store._read(  # noqa: SLF001
        "SELECT c.message_id, c.collection, c.mode, c.notice, c.citations_json FROM reply_citations c "
        "JOIN messages m ON m.id = c.message_id AND m.version = c.version WHERE m.conversation_id = ?",
        (conversation_id,))
    return {row[0]: ReplySources(row[1], row[2], row[3], _citations(row[4])) for row in rows}


def _citations(text: str) -> tuple[SavedCitation, ...]:
    try:
        items = json.loads(text)
    except ValueError:
        return ()
    found = []
    for item in items if isinstance(items, list) else ():
        try:
            found.append(SavedCitation(int(item["number"]), str(item["path"]),
                                       int(item["page"]) if item.get("page") is not None else None,
                                       int(item["start"]), int(item["end"]), float(item["score"]),
                                       float(item["similarity"]), str(item["text"])))
        except (KeyError, TypeError, ValueError):
            continue  # one unreadable entry does not hide the others
    return tuple(found)
