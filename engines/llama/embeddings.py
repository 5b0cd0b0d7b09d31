"""Embeddings with llama.cpp's embedding mode: one vector per text, batched.

Texts are packed into as few llama.cpp batches as fit (each text its own
sequence, up to the batch size in tokens and llama.cpp's sequence limit),
the way llama-cpp-python's ``Llama.embed`` does; each batch is one
``Llama.embed`` call, so the pooling and the batch bookkeeping stay
llama-cpp-python's, and between batches the cancel flag is polled and
progress is reported.

``Llama.embed`` silently truncates a text longer than a batch; a text that
does not fit is refused here instead (CONTEXT_OVERFLOW, with its size),
because a vector of half a document is a wrong answer that looks right.
A model whose pooling is "none" gives one vector per token; those are
mean-pooled here, as sentence-transformers does, so every model answers
with one vector per text.
"""

from __future__ import annotations

import numpy as np

from engines.api import CancelFlag, Emit, EmbeddingRequest, EmbeddingResult, ProgressEvent
from engines.errors import EngineError, ErrorKind


def embed(llm, request: EmbeddingRequest, model_name: str, emit: Emit, cancel: CancelFlag) -> EmbeddingResult:
    import llama_cpp

    n_batch = int(llm.n_batch)
    n_seq_max = int(llm.context_params.n_seq_max)
    sizes = [len(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)) for text in request.texts]
    for index, size in enumerate(sizes):
        if size > n_batch:
            where = f"Text {index + 1} of {len(sizes)}" if len(sizes) > 1 else "The text"
            raise EngineError(
                ErrorKind.CONTEXT_OVERFLOW,
                f"{where} is {size:,} tokens; this embedding model takes at most {n_batch:,}. Split it into shorter passages.",
            )
    per_token = llm.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_NONE
    vectors: list[tuple[float, ...]] = []
    groups = _pack(sizes, n_batch, n_seq_max)
    for number, group in enumerate(groups):
        if cancel.is_set():
            raise EngineError(ErrorKind.CANCELLED, "The embedding was stopped.")
        texts = [request.texts[i] for i in group]
        rows = llm.embed(texts, normalize=False, truncate=False)
        for row in rows:
            vector = np.asarray(row, dtype=np.float64)
            if per_token:
                vector = vector.mean(axis=0)
            if request.normalize:
                norm = float(np.linalg.norm(vector))
                vector = vector / norm if norm > 0 else vector
            vectors.append(tuple(float(x) for x in vector))
        if len(groups) > 1:
            emit(ProgressEvent("embed", f"Embedded {len(vectors)} of {len(sizes)} texts", (number + 1) / len(groups)))
    return EmbeddingResult(vectors=tuple(vectors), prompt_tokens=sum(sizes), model=model_name)


def _pack(sizes: list[int], n_batch: int, n_seq_max: int) -> list[list[int]]:
    """Indexes of texts per llama.cpp batch, in order: at most ``n_batch`` tokens and ``n_seq_max`` texts each."""
    groups: list[list[int]] = []
    tokens = 0
    for index, size in enumerate(sizes):
        if not groups or tokens + size > n_batch or len(groups[-1]) >= n_seq_max:
            groups.append([])
            tokens = 0
        groups[-1].append(index)
        tokens += size
    return groups
