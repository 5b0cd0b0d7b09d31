"""What the documents engine is asked, and what it answers, across the engine-host protocol.

Like :mod:`engines.api`, these are frozen, plain dataclasses that msgspec
encodes field by field (they are on the closed list of
:mod:`engines.host.payloads`), and importing this module is cheap: it is
imported by the host protocol, so it must need nothing but the standard
library (the private image engine's Python imports the protocol too).
They live in the engine layer (engines.doc_index), below the host, for
the same reason.

The database path and the collection's id travel in every request: the
engine host opens the collection's SQLite file itself and commits its work
there as it goes, so a kill -9 loses at most the batch being embedded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IndexState = Literal["indexed", "unchanged", "partial", "skipped"]
# Passages embedded per IndexFileRequest: about a second of work for a small model on two cores, so a chat
# reply waiting for the same CPU lane (engines.scheduler.lanes) starts within that second, not after a whole book.
PASSAGES_PER_REQUEST = 64


@dataclass(frozen=True)
class IndexFileRequest:
    """Read one file, split it into passages, embed up to ``max_passages`` more of them and commit them."""

    database: str
    collection_id: int
    path: str
    max_passages: int = PASSAGES_PER_REQUEST

    def validate(self) -> list[str]:
        problems = []
        if not self.database or not self.path:
            problems.append("the request names no database or no file")
        if self.max_passages < 1:
            problems.append("at least one passage must be embedded per request")
        return problems


@dataclass(frozen=True)
class IndexFileResult:
    """Where one file stands after a request.

    ``state``: ``indexed`` (all its passages are stored now), ``unchanged``
    (its content was already indexed), ``partial`` (more passages to embed:
    send the request again), ``skipped`` (``reason`` says why, in words).
    """

    path: str
    state: IndexState
    reason: str = ""
    passages_done: int = 0
    passages_total: int = 0
    embedded: int = 0  # passages embedded by this request
    tokens: int = 0  # tokens embedded by this request
    pages: int | None = None  # for paged formats (PDF)
    note: str = ""  # something to tell about a file that was indexed (pages without text)


@dataclass(frozen=True)
class SearchRequest:
    """The passages of a collection that answer ``question``, best first."""

    database: str
    collection_id: int
    question: str
    top_k: int = 5

    def validate(self) -> list[str]:
        problems = []
        if not self.question.strip():
            problems.append("the question is empty")
        if not 1 <= self.top_k <= 100:
            problems.append("top-k must be between 1 and 100")
        return problems


@dataclass(frozen=True)
class PassageHit:
    """One retrieved passage and why it ranked where it did.

    ``page`` is 1-based for paged formats (PDF) and None otherwise;
    ``start``/``end`` are character offsets into the text of that page (or
    of the whole file). ``score`` is the fused rank score (reciprocal rank
    fusion of the vector and keyword rankings); ``similarity`` the cosine
    similarity to the question; ``keyword_rank`` its place in the keyword
    ranking (1 is best), or None when the keywords did not find it.
    """

    passage_id: int
    path: str
    page: int | None
    start: int
    end: int
    text: str
    score: float
    similarity: float
    keyword_rank: int | None = None


@dataclass(frozen=True)
class SearchResult:
    """The relevant passages (empty when nothing is relevant) and the figures behind that decision."""

    hits: tuple[PassageHit, ...]
    searched: int  # passages in the collection
    best_similarity: float | None  # the closest passage's similarity, relevant or not
    threshold: float  # the similarity a passage needs (unless every keyword of the question is in it)
    model: str
