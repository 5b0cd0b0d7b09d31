"""The documents engine in this process, on the real all-MiniLM-L6-v2: a file embedded over several requests.

The CLI tests (tests/test_documents_cli.py) run it in an engine host; here
the requests are sent one by one, so the ``partial`` answers, the resume
after a new engine (as after a kill) and the stored spans can be checked.
"""

from __future__ import annotations

import pytest

from engines.api import TextLoadSpec
from engines.doc_index.engine import DocumentIndexEngine
from engines.doc_index.store import DocumentStore
from engines.doc_index.types import IndexFileRequest, SearchRequest
from tests.fixtures.minilm import minilm_gguf  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow

TEXT = " ".join(f"Sentence {n} says that crate {n} holds {n * 3} lemons from orchard {n % 4}." for n in range(12))


def engine_for(model) -> DocumentIndexEngine:
    engine = DocumentIndexEngine()
    engine.load(TextLoadSpec(str(model), context_length=512, threads=2), lambda event: None)
    return engine


def test_a_file_is_embedded_over_several_requests_and_resumes_in_a_new_engine(tmp_path, minilm_gguf):  # noqa: F811
    database = tmp_path / "documents.sqlite3"
    document = tmp_path / "crates.txt"
    document.write_text(TEXT)
    with DocumentStore(database) as store:
        collection = store.create_collection("c", str(minilm_gguf), "MiniLM", passage_tokens=40, overlap_tokens=8,
                                             query_prefix="", document_prefix="", threshold=0.3)
    request = IndexFileRequest(str(database), collection.id, str(document), max_passages=2)
    engine = engine_for(minilm_gguf)
    first = engine.generate(request, lambda event: None, _never())
    assert (first.state, first.passages_done, first.embedded) == ("partial", 2, 2)
    total = first.passages_total
    assert total > 4
    engine.unload()  # as if the host had been killed: a new engine resumes from what was committed
    engine = engine_for(minilm_gguf)
    states = []
    while True:
        result = engine.generate(request, lambda event: None, _never())
        states.append((result.state, result.passages_done))
        if result.state != "partial":
            break
    assert states[0] == ("partial", 4) and states[-1] == ("indexed", total)
    assert engine.generate(request, lambda event: None, _never()).state == "unchanged"
    with DocumentStore(database) as store:
        record = store.file(collection.id, str(document))
        passages = store.passages_of(record.id)
    assert (record.state, record.passages, len(passages)) == ("indexed", total, total)
    assert all(TEXT[start:end] == text for _, start, end, text in passages)
    assert passages[1][1] < passages[0][2]  # the second passage starts inside the first: the overlap
    found = engine.generate(SearchRequest(str(database), collection.id, "How many lemons are in crate 7?", 3),
                            lambda event: None, _never())
    assert any("crate 7 holds 21 lemons" in hit.text for hit in found.hits)
    engine.unload()


def _never():
    import threading

    return threading.Event()
