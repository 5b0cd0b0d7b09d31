"""Keyword ranking of the hybrid search: a very common word never drowns a rare one, at any budget.

The search (engines/doc_index/search.py) leaves the commonest words of a
question out of the BM25 ranking when their rows add up to more than
``POSTINGS_BUDGET`` (what keeps a question under 100 ms at 100,000
passages). These tests run the real search on a real SQLite/FTS5 store,
with the real budget and with a budget small enough for 300 passages to
need the pruning, so both paths rank the same way. The vectors are
orthogonal to the question's, so a passage counts only through its
keywords: what is checked is the keyword ranking alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.doc_index import search as search_module
from engines.doc_index.search import VectorCache, keyword_query, keywords, search
from engines.doc_index.store import DocumentStore, NewPassage

RARE = ("The harbour office of Zanzibar keeps its own records of every ship that called there, with the cargo, "
        "the crew, the weather of the day and the fees paid, and one clerk runs the system for all of it.")
COMMON = 300  # passages that say "system", several times each, and are short (BM25 favours them for "system")
BOTH = 10  # of them also say "service" and "logs"; 120 say each of the two
ACCENTED = ("Le café crème est servi au comptoir.", "Un cafe\u0301 noir, sans cre\u0300me.")  # composed, decomposed
SMALL_BUDGET = 50


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = DocumentStore(tmp_path_factory.mktemp("search") / "documents.sqlite3")
    collection = store.create_collection("c", "/m.gguf", "m", passage_tokens=256, overlap_tokens=32, query_prefix="",
                                         document_prefix="", threshold=0.3)
    texts = [RARE, *ACCENTED]
    for number in range(COMMON):
        extra = ""
        if number < BOTH or BOTH <= number < 120:
            extra += " The service is up."
        if number < BOTH or 120 <= number < 230:
            extra += " See the logs."
        texts.append(f"The system {number}: the system starts the system.{extra}")
    file_id, _ = store.begin_file(collection.id, "/doc.txt", sha256="a", size=1, mtime_ns=1, format="text",
                                  pages=None, characters=1, note="")
    vector = np.array([1, 0, 0, 0], dtype="<f4").tobytes()
    store.add_passages(collection.id, file_id, [NewPassage(i, None, 0, len(text), 40, text, vector)
                                                for i, text in enumerate(texts)], 4)
    store.finish_file(file_id)
    yield store
    store.close()


def ask(store: DocumentStore, question: str, top_k: int = 5):
    unrelated = np.array([0, 1, 0, 0], dtype=np.float32)  # similarity 0 with every passage: keywords alone count
    return search(store, store.collection("c"), question, unrelated, top_k, VectorCache())


@pytest.mark.parametrize("budget", [search_module.POSTINGS_BUDGET, SMALL_BUDGET])
def test_a_word_every_passage_holds_does_not_drown_a_rare_one(store, monkeypatch, budget):
    monkeypatch.setattr(search_module, "POSTINGS_BUDGET", budget)
    result = ask(store, "Which system is in Zanzibar?")
    assert [(hit.text, hit.keyword_rank) for hit in result.hits] == [(RARE, 1)]
    expected = '"zanzibar" OR "system"' if budget > COMMON else '"zanzibar"'  # rarest first; "system" left out
    assert keyword_query(store, keywords("Which system is in Zanzibar?")) == expected


def test_over_the_budget_the_passages_holding_the_common_words_together_are_ranked(store, monkeypatch):
    monkeypatch.setattr(search_module, "POSTINGS_BUDGET", SMALL_BUDGET)  # 120 rows say each word: over it
    assert keyword_query(store, ["service", "logs"]) == '"service" AND "logs"'
    result = ask(store, "service logs", top_k=BOTH)
    assert len(result.hits) == BOTH
    assert all("The service is up. See the logs." in hit.text for hit in result.hits)


def test_a_question_of_words_most_passages_hold_is_left_to_the_vectors(store, monkeypatch):
    monkeypatch.setattr(search_module, "POSTINGS_BUDGET", SMALL_BUDGET)
    assert keyword_query(store, ["system", "starts"]) is None  # 300 rows hold both: nothing fits
    result = ask(store, "system starts")
    assert result.hits == () and result.searched == COMMON + 3 and result.best_similarity == 0.0


def test_words_no_passage_holds_are_left_out_and_accents_fold_as_fts5_folds_them(store):
    assert keyword_query(store, ["quokka", "zanzibar"]) == '"zanzibar"'
    assert keyword_query(store, ["quokka"]) is None
    result = ask(store, "cafe creme")
    assert sorted(hit.text for hit in result.hits) == sorted(ACCENTED)
