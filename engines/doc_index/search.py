"""Hybrid search over one collection: cosine similarity (numpy) and keywords (FTS5), fused by rank.

- **Vectors** are the float32 blobs of the passages, read once into one
  matrix per collection and kept while the collection's ``revision`` is
  unchanged (the engine host answers many questions with one read); a
  question is one matrix-vector product. At 100,000 passages of 384
  floats that is 150 MB and a few milliseconds, with nothing to build or
  keep in step, which is why no approximate index (usearch, HNSW) is
  used: benchmarks/bench_documents.py measures it.
- **Keywords** come from the FTS5 table, BM25-ranked, the words of the
  question OR-ed (stop words left out); one ranking query per question
  (which of the best keyword passages hold every word is read from their
  text). BM25 scores every row that holds any of the words, so its cost
  is the sum of the words' document frequencies: at 100,000 passages a
  question of common words ("file", "must", "package") made it 100-150 ms.
  So the words are ranked rarest first and kept while their frequencies
  add up to at most ``POSTINGS_BUDGET`` rows (:func:`keyword_query`). A
  word left out is one that a large share of the passages hold, whose
  BM25 weight (its idf) is small beside the rarer words', so it cannot
  drown a rare word, and the ranking barely moves; a collection whose
  words all fit the budget (any collection of under 10,000 passages) is
  ranked exactly as before.
  The frequencies are counted over the whole keyword index, because that
  is what the ranking query reads, whatever the collection.
- **Fusion** is reciprocal rank fusion (1/(60 + rank) summed over both
  rankings), as GPT4All's LocalDocs does: it needs no common scale for a
  cosine and a BM25 score.
- **Relevance.** A passage counts when its similarity reaches the
  collection's threshold, or when it holds every keyword of the question
  (a name or a code the embedding model does not know). When none counts,
  the result is empty and says how close the best one came, so the user
  and the model can be told that nothing relevant was found.
"""

from __future__ import annotations

import re
import threading
import unicodedata

import numpy as np

from engines.doc_index.store import Collection, DocumentStore
from engines.doc_index.types import PassageHit, SearchResult

RRF_K = 60
CANDIDATES = 50  # per ranking, before fusion
# Rows BM25 may score per question: at most about 20 ms of FTS5 on this machine (benchmarks/bench_documents.py).
POSTINGS_BUDGET = 10_000
_WORD = re.compile(r"\w+", re.UNICODE)
_STOP_WORDS = frozenset("""
a an and are as at be by can do does for from has have how i if in is it its me my not of on or so that the
their them then there these this to was what when where which who why will with you your
""".split())


class VectorCache:
    """Each collection's vectors as one matrix, read again only when its revision moved."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], tuple[int, np.ndarray, np.ndarray]] = {}

    def matrix(self, store: DocumentStore, collection: Collection) -> tuple[np.ndarray, np.ndarray]:
        """(passage ids sorted, their vectors as rows)."""
        key = (str(store.path), collection.id)
        revision = store.revision(collection.id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == revision:
                return entry[1], entry[2]
        ids, matrix = read_vectors(store, collection)
        with self._lock:
            self._entries[key] = (revision, ids, matrix)
        return ids, matrix


def read_vectors(store: DocumentStore, collection: Collection) -> tuple[np.ndarray, np.ndarray]:
    rows = store.db.execute(
        "SELECT p.id, p.vector FROM passages p JOIN files f ON f.id = p.file_id WHERE f.collection_id = ? "
        "ORDER BY p.id", (collection.id,)).fetchall()
    width = collection.dimensions or 0
    if not rows or not width:
        return np.zeros(0, dtype=np.int64), np.zeros((0, width), dtype=np.float32)
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f4").reshape(len(rows), width)
    return ids, matrix


def keywords(question: str) -> list[str]:
    """The question's words that carry meaning, in order, once each."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(question.lower()):
        if word not in _STOP_WORDS and (len(word) > 1 or word.isdigit()):  # "crate 7": a digit is a keyword
            seen.setdefault(word, None)
    return list(seen)


def search(store: DocumentStore, collection: Collection, question: str, question_vector: np.ndarray,
           top_k: int, cache: VectorCache) -> SearchResult:
    ids, matrix = cache.matrix(store, collection)
    if len(ids) == 0:
        return SearchResult((), 0, None, collection.threshold, collection.model_name)
    similarities = matrix @ question_vector.astype(np.float32)
    count = min(CANDIDATES, len(ids))
    best_rows = np.argpartition(-similarities, count - 1)[:count]
    best_rows = best_rows[np.argsort(-similarities[best_rows])]
    vector_rank = {int(ids[row]): rank for rank, row in enumerate(best_rows, start=1)}
    words = keywords(question)
    keyword_rank = _keyword_ranking(store, collection.id, words)
    every_word = _holding_every_word(store, keyword_rank, words)
    fused: dict[int, float] = {}
    for ranking in (vector_rank, keyword_rank):
        for passage_id, rank in ranking.items():
            fused[passage_id] = fused.get(passage_id, 0.0) + 1.0 / (RRF_K + rank)

    def similarity_of(passage_id: int) -> float:
        return float(similarities[int(np.searchsorted(ids, passage_id))])

    relevant = [pid for pid in fused if similarity_of(pid) >= collection.threshold or pid in every_word]
    relevant.sort(key=lambda pid: -fused[pid])
    hits = tuple(_hit(store, pid, fused[pid], similarity_of(pid), keyword_rank.get(pid))
                 for pid in relevant[:top_k])
    return SearchResult(hits, len(ids), float(similarities.max()), collection.threshold, collection.model_name)


def _keyword_ranking(store: DocumentStore, collection_id: int, words: list[str]) -> dict[int, int]:
    query = keyword_query(store, words)
    if query is None:
        return {}
    rows = store.db.execute(
        "SELECT passages_fts.rowid FROM passages_fts JOIN passages p ON p.id = passages_fts.rowid "
        "JOIN files f ON f.id = p.file_id WHERE passages_fts MATCH ? AND f.collection_id = ? "
        "ORDER BY passages_fts.rank LIMIT ?", (query, collection_id, CANDIDATES)).fetchall()
    return {int(row[0]): rank for rank, row in enumerate(rows, start=1)}


def keyword_query(store: DocumentStore, words: list[str]) -> str | None:
    """The FTS5 query that ranks the question's words within ``POSTINGS_BUDGET`` rows (see the module docstring).

    The rarest words, OR-ed, while their rows add up to the budget. When
    even the rarest word is held by more rows than that, the rows holding
    the rarest words together (AND-ed, one more at a time) if they fit;
    else None: such words are so common that their BM25 order says little,
    and the vectors rank the question alone. A word no passage holds is
    left out (it adds nothing to any score). Counting a query's rows walks
    its posting lists without scoring them: a few milliseconds, where
    scoring the same rows takes 20-80.
    """
    frequencies = []
    for order, word in enumerate(words):
        rows = _rows_matching(store, _phrase(word))
        if rows:
            frequencies.append((rows, order, word))
    frequencies.sort()
    kept, total = [], 0
    for rows, _, word in frequencies:
        if total + rows > POSTINGS_BUDGET:
            break
        kept.append(_phrase(word))
        total += rows
    if kept:
        return " OR ".join(kept)
    together = [_phrase(word) for _, _, word in frequencies]
    for count in range(2, len(together) + 1):
        query = " AND ".join(together[:count])
        rows = _rows_matching(store, query)
        if rows == 0:
            return None
        if rows <= POSTINGS_BUDGET:
            return query
    return None


def _rows_matching(store: DocumentStore, query: str) -> int:
    return store.db.execute("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH ?", (query,)).fetchone()[0]


def _phrase(word: str) -> str:
    """A word as an FTS5 string: quoted, so that no word of a question is read as FTS5 syntax (NOT, NEAR, *)."""
    return '"' + word.replace('"', '""') + '"'


def _holding_every_word(store: DocumentStore, keyword_rank: dict[int, int], words: list[str]) -> set[int]:
    """The keyword candidates that hold every word of the question (checked on their words, not by a second search)."""
    if not words or not keyword_rank:
        return set()
    marks = ",".join("?" * len(keyword_rank))
    rows = store.db.execute(f"SELECT id, text FROM passages WHERE id IN ({marks})", list(keyword_rank)).fetchall()
    wanted = {_fold(word) for word in words}
    return {row[0] for row in rows if wanted <= _folded_words(row[1])}


def _folded_words(text: str) -> set[str]:
    """The text's words, folded as :func:`_fold` folds them.

    Each distinct word is folded once, and only when it is not plain
    ASCII: folding 50 passages character by character took 80 ms a
    question, more than the rest of the search. The text is composed
    (NFC) first, so that an accent typed as a separate combining mark
    stays inside its word.
    """
    if text.isascii():
        return set(_WORD.findall(text.lower()))
    words = set(_WORD.findall(unicodedata.normalize("NFC", text).lower()))
    return {word if word.isascii() else _fold(word) for word in words}


def _fold(text: str) -> str:
    """Lower case without accents, as FTS5's unicode61 tokenizer with remove_diacritics matches words."""
    if text.isascii():
        return text.lower()
    return "".join(ch for ch in unicodedata.normalize("NFD", text.lower()) if not unicodedata.combining(ch))


def _hit(store: DocumentStore, passage_id: int, score: float, similarity: float, keyword_rank: int | None) -> PassageHit:
    row = store.db.execute(
        "SELECT f.path, p.page, p.char_start, p.char_end, p.text FROM passages p JOIN files f ON f.id = p.file_id "
        "WHERE p.id = ?", (passage_id,)).fetchone()
    path, page, start, end, text = row
    return PassageHit(passage_id, path, page, start, end, text, round(score, 6), round(similarity, 4), keyword_rank)
