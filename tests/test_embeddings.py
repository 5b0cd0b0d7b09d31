"""Embeddings with llama.cpp's embedding mode, on the real all-MiniLM-L6-v2 converted to GGUF."""

import threading

import numpy as np
import pytest

from engines.api import ChatMessage, EmbeddingRequest, ProgressEvent, TextLoadSpec, TextRequest
from engines.errors import EngineError, ErrorKind
from tests.fixtures.minilm import MINILM_DIMENSIONS, minilm_gguf  # noqa: F401  (session fixture)

pytest.importorskip("llama_cpp")
from engines.llama.engine import LlamaCppEngine  # noqa: E402

pytestmark = pytest.mark.slow  # a real model, end to end (and its first conversion takes a minute)

CAT = "The cat sits on the mat."
FELINE = "A feline rests on a rug."
UNRELATED = ("The stock market fell sharply today.", "How do I bake sourdough bread?", "Quantum computers use qubits.")


@pytest.fixture(scope="module")
def minilm(minilm_gguf):  # noqa: F811
    engine = LlamaCppEngine()
    info = engine.load(TextLoadSpec(str(minilm_gguf), embedding=True), lambda e: None)
    yield engine, info
    engine.unload()


def embed(engine, texts, normalize=True, events=None):
    request = EmbeddingRequest(tuple(texts), normalize=normalize)
    return engine.generate(request, (events if events is not None else []).append, threading.Event())


def test_the_model_loads_in_embedding_mode_at_its_trained_context(minilm):
    _, info = minilm
    assert info.embedding and info.architecture == "bert"
    assert info.context_length == info.trained_context_length == 512  # not the 4,096 asked for: BERT has 512 positions
    assert info.template == "none"


def test_similar_sentences_are_close_and_unrelated_ones_are_not(minilm):
    engine, info = minilm
    result = embed(engine, (CAT, FELINE) + UNRELATED)
    vectors = np.array(result.vectors)
    assert vectors.shape == (5, MINILM_DIMENSIONS) and result.dimensions == MINILM_DIMENSIONS
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    cosine = vectors @ vectors.T
    assert 0.50 < cosine[0, 1] < 0.62  # sentence-transformers gives 0.56 for this pair
    assert all(cosine[0, j] < 0.15 and cosine[1, j] < 0.15 for j in (2, 3, 4))
    assert result.model == info.name
    assert result.prompt_tokens == sum(len(engine._llm.tokenize(t.encode())) for t in (CAT, FELINE) + UNRELATED)


def test_unnormalized_vectors_point_the_same_way(minilm):
    engine, _ = minilm
    raw = np.array(embed(engine, [CAT], normalize=False).vectors[0])
    unit = np.array(embed(engine, [CAT]).vectors[0])
    assert abs(np.linalg.norm(raw) - 1.0) > 0.01
    assert np.allclose(raw / np.linalg.norm(raw), unit, atol=1e-6)


def test_a_batch_gives_each_text_the_vector_it_gets_alone_in_few_llama_cpp_calls(minilm, monkeypatch):
    engine, _ = minilm
    texts = [f"Passage number {i} talks about {topic}." for i, topic in
             enumerate(["rivers", "mountains", "music", "chess", "bread", "rockets"] * 7)]
    alone = [embed(engine, [t]).vectors[0] for t in texts[:5]]
    calls = []
    real_embed = engine._llm.embed
    monkeypatch.setattr(engine._llm, "embed", lambda batch, **kw: calls.append(len(batch)) or real_embed(batch, **kw))
    together = embed(engine, texts)
    assert calls == [42]  # 42 short passages fit one llama.cpp batch of 512 tokens
    assert len(together.vectors) == 42
    assert np.allclose(np.array(together.vectors[:5]), np.array(alone), atol=1e-4)


def test_texts_beyond_one_batch_are_split_and_reported(minilm, monkeypatch):
    engine, _ = minilm
    long_text = "word " * 300  # about 300 tokens: two of them do not fit one 512-token batch
    calls, events = [], []
    real_embed = engine._llm.embed
    monkeypatch.setattr(engine._llm, "embed", lambda batch, **kw: calls.append(len(batch)) or real_embed(batch, **kw))
    result = embed(engine, [long_text, long_text, CAT], events=events)
    assert calls == [1, 2] and len(result.vectors) == 3
    assert np.allclose(result.vectors[0], result.vectors[1], atol=1e-5)
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert [(e.message, e.fraction) for e in progress] == [("Embedded 1 of 3 texts", 0.5), ("Embedded 3 of 3 texts", 1.0)]


def test_a_text_longer_than_the_model_takes_is_refused_not_truncated(minilm):
    engine, _ = minilm
    with pytest.raises(EngineError) as info:
        embed(engine, [CAT, "word " * 600])
    assert info.value.kind == ErrorKind.CONTEXT_OVERFLOW
    assert info.value.message == ("Text 2 of 2 is 602 tokens; this embedding model takes at most 512. "
                                  "Split it into shorter passages.")


def test_empty_input_and_the_wrong_kind_of_request_are_bad_input(minilm, tiny_gguf):
    engine, info = minilm
    for texts, problem in (((), "There is no text to embed."), (("ok", "  "), "Every text to embed must be non-empty.")):
        with pytest.raises(EngineError) as caught:
            embed(engine, texts)
        assert caught.value.kind == ErrorKind.BAD_INPUT and caught.value.message == problem
    with pytest.raises(EngineError) as caught:
        engine.generate(TextRequest((ChatMessage("user", "hi"),)), lambda e: None, threading.Event())
    assert caught.value.message == f"{info.name} is loaded for embeddings; it does not write replies."
    chat = LlamaCppEngine()
    chat_info = chat.load(TextLoadSpec(str(tiny_gguf), context_length=256, threads=1), lambda e: None)
    with pytest.raises(EngineError) as caught:
        embed(chat, [CAT])
    assert caught.value.kind == ErrorKind.BAD_INPUT
    assert caught.value.message == f"{chat_info.name} is loaded for chat; load it in embedding mode to embed texts."
    chat.unload()
