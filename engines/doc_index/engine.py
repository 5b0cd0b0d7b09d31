"""The documents engine: indexes files and answers searches, inside an engine host.

It is the llama.cpp engine loaded in embedding mode (``TextLoadSpec(embedding=True)``:
the same load checks, memory preflight and cancel points) plus what
indexing needs next to the model: the model's tokenizer to split
passages, and the documents database, which this process opens itself
and commits to after every batch, so a quit or a kill -9 loses at most
the batch being embedded. Requests:

- :class:`IndexFileRequest`: read one file, split it, embed the next
  ``max_passages`` passages, store them. The front end sends it again
  while the answer says ``partial``; small requests keep the CPU lane free
  for a chat reply in between (engines.scheduler.lanes).
- :class:`SearchRequest`: embed the question and rank the passages
  (:mod:`engines.doc_index.search`), the vectors cached per collection.
- :class:`EmbeddingRequest`: passed to llama.cpp unchanged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import numpy as np

from engines.api import CancelFlag, EmbeddingRequest, Emit, ModelInfo, ProgressEvent, TextLoadSpec
from engines.doc_index.document import Document
from engines.doc_index.file_bytes import Unreadable, read_document_bytes
from engines.doc_index.passages import Passage, split_passages
from engines.doc_index.readers import format_of, read_document, unsupported_reason
from engines.doc_index.search import VectorCache, search
from engines.doc_index.store import Collection, DocumentStore, NewPassage
from engines.doc_index.types import IndexFileRequest, IndexFileResult, SearchRequest, SearchResult
from engines.errors import EngineError, ErrorKind, problems_sentence
from engines.llama.engine import LlamaCppEngine

log = logging.getLogger(__name__)


class DocumentIndexEngine:
    def __init__(self) -> None:
        self._llama = LlamaCppEngine()
        self._info: ModelInfo | None = None
        self._stores: dict[str, DocumentStore] = {}
        self._vectors = VectorCache()
        self._split: tuple[tuple, Document, list[Passage]] | None = None  # the last file's, by (path, sha256)

    def load(self, spec: TextLoadSpec, emit: Emit, cancel: CancelFlag | None = None) -> ModelInfo:
        self._info = self._llama.load(replace(spec, embedding=True), emit, cancel)
        return self._info

    def unload(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        self._llama.unload()
        self._info = None

    def generate(self, request, emit: Emit, cancel: CancelFlag):
        if self._info is None:
            raise EngineError(ErrorKind.BAD_INPUT, "No model is loaded.")
        if isinstance(request, EmbeddingRequest):
            return self._llama.generate(request, emit, cancel)
        problems = request.validate()
        if problems:
            raise EngineError(ErrorKind.BAD_INPUT, problems_sentence(problems))
        if isinstance(request, IndexFileRequest):
            return self._index_file(request, emit, cancel)
        if isinstance(request, SearchRequest):
            return self._search(request, emit, cancel)
        raise EngineError(ErrorKind.BAD_INPUT, f"The documents engine does not answer {type(request).__name__}.")

    # ---- indexing -----------------------------------------------------------

    def _index_file(self, request: IndexFileRequest, emit: Emit, cancel: CancelFlag) -> IndexFileResult:
        store = self._store(request.database)
        collection = self._collection(store, request.collection_id)
        path = request.path
        kind = format_of(path)
        if kind is None:
            return self._skip(store, collection, path, unsupported_reason(path))
        try:
            content = read_document_bytes(path)
        except Unreadable as exc:
            return self._skip(store, collection, path, str(exc), format=kind)
        known = store.file(collection.id, path)
        if known is not None and known.state == "indexed" and known.sha256 == content.sha256:
            if (known.size, known.mtime_ns) != (content.size, content.mtime_ns):
                store.touch(known.id, content.size, content.mtime_ns)
            return IndexFileResult(path, "unchanged", passages_done=known.passages, passages_total=known.passages,
                                   pages=known.pages, note=known.note)
        try:
            document, passages = self._passages(path, content, collection)
        except Unreadable as exc:
            return self._skip(store, collection, path, str(exc), format=kind)
        if not passages:
            return self._skip(store, collection, path, "the file has no text", format=document.format)
        pages = len(document.pages) if document.format == "pdf" else None
        file_id, stored = store.begin_file(collection.id, path, sha256=content.sha256, size=content.size,
                                           mtime_ns=content.mtime_ns, format=document.format, pages=pages,
                                           characters=document.characters, note=document.note)
        batch = passages[stored:stored + request.max_passages]
        embedded_tokens = 0
        if batch:
            emit(ProgressEvent("embed", f"Embedding passages {stored + 1}-{stored + len(batch)} of "
                                        f"{len(passages)}", stored / len(passages)))
            texts = tuple(collection.document_prefix + p.text for p in batch)
            result = self._llama.generate(EmbeddingRequest(texts, normalize=True), emit, cancel)
            vectors = np.asarray(result.vectors, dtype="<f4")
            store.add_passages(collection.id, file_id, [
                NewPassage(p.ordinal, p.page, p.start, p.end, p.tokens, p.text, vectors[i].tobytes())
                for i, p in enumerate(batch)], vectors.shape[1])
            embedded_tokens = result.prompt_tokens
        done = stored + len(batch)
        if done >= len(passages):
            store.finish_file(file_id)
            self._split = None
            state = "indexed"
        else:
            state = "partial"
        return IndexFileResult(path, state, passages_done=done, passages_total=len(passages), embedded=len(batch),
                               tokens=embedded_tokens, pages=pages, note=document.note)

    def _passages(self, path: str, content, collection: Collection) -> tuple[Document, list[Passage]]:
        """The file's text and passages; the last file's are kept, so the next batch of a big PDF is not parsed again."""
        key = (path, content.sha256, collection.id, collection.passage_tokens, collection.overlap_tokens)
        if self._split is not None and self._split[0] == key:
            return self._split[1], self._split[2]
        document = read_document(path, content.data)
        prefix_tokens = self._llama.count_tokens(collection.document_prefix) if collection.document_prefix else 0
        passages = split_passages(document.pages, self._llama.count_tokens,
                                  passage_tokens=collection.passage_tokens - prefix_tokens,
                                  overlap_tokens=collection.overlap_tokens)
        self._split = (key, document, passages)
        return document, passages

    def _skip(self, store: DocumentStore, collection: Collection, path: str, reason: str, *,
              format: str | None = None) -> IndexFileResult:
        size = mtime = None
        try:
            info = os.stat(path)
            size, mtime = info.st_size, info.st_mtime_ns
        except OSError:
            pass
        store.skip(collection.id, path, reason, size=size, mtime_ns=mtime, format=format)
        return IndexFileResult(path, "skipped", reason=reason)

    # ---- searching ------------------------------------------------------------

    def _search(self, request: SearchRequest, emit: Emit, cancel: CancelFlag) -> SearchResult:
        store = self._store(request.database)
        collection = self._collection(store, request.collection_id)
        question = collection.query_prefix + request.question.strip()
        result = self._llama.generate(EmbeddingRequest((question,), normalize=True), emit, cancel)
        vector = np.asarray(result.vectors[0], dtype=np.float32)
        if collection.dimensions is not None and collection.dimensions != len(vector):
            raise EngineError(ErrorKind.BAD_INPUT, f"The collection '{collection.name}' was indexed with "
                                                   f"{collection.dimensions}-wide vectors, this model gives "
                                                   f"{len(vector)}; index it again with its model.")
        return search(store, collection, request.question, vector, request.top_k, self._vectors)

    # ---- the database ---------------------------------------------------------

    def _store(self, database: str) -> DocumentStore:
        store = self._stores.get(database)
        if store is None:
            store = self._stores[database] = DocumentStore(database)
        return store

    @staticmethod
    def _collection(store: DocumentStore, collection_id: int) -> Collection:
        collection = store.collection_by_id(collection_id)
        if collection is None:
            raise EngineError(ErrorKind.BAD_INPUT, "The collection no longer exists (it was removed).")
        return collection
