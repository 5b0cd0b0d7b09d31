"""Documents: indexing throughput, query latency at 100,000 passages, and recall@5 on real documentation.

Run it alone, on a quiet machine: ``python -m benchmarks.bench_documents``
(not part of ``make test``). The embedding model is the real
all-MiniLM-L6-v2 (tests/fixtures/minilm.py converts it offline).

- **Indexing throughput** (target: at least 0.9x of llama.cpp alone):
  ``DocumentLibrary.index`` on a real corpus (Debian's dpkg specifications
  and libffi's HTML manual under /usr/share/doc: 4 text files, 20 HTML
  pages), through the scheduler and the engine host as the CLI does it, in
  passages per second, against the same passages embedded by
  llama-cpp-python's ``Llama.embed`` in this process, with the same
  threads, batch and context: what llama.cpp gives with no reading,
  splitting, storing or process hop.
- **Query latency** (target: p95 at most 100 ms, excluding the LLM): one
  collection of 100,000 passages, synthetic to reach the size (random unit
  vectors, 384 wide; the text of each row is a real passage of the corpus
  with a number, so the keyword index has real words and real posting
  lists); 100 questions, each a full hybrid search (vectors + FTS5 +
  fusion + the hits' rows) with the vectors already in memory, plus,
  separately, the cost of embedding a question with the real model; the
  first query (reading 100,000 vectors from SQLite) is reported apart.
  Each query's CPU time (``time.process_time``) is reported beside its
  wall time: on a machine shared with other work the wall time measures
  the queue for a core, the CPU time what the search itself costs.
- **Recall@5**: 16 questions written from the corpus, each with the file and
  a phrase of its answer; a question counts when one of the top 5 hits is
  that file and holds the phrase.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# ATELIER_BENCH_CORPUS (paths joined by ':') and ATELIER_BENCH_PASSAGES shrink a run to check the script itself.
CORPUS = tuple(os.environ.get("ATELIER_BENCH_CORPUS", "/usr/share/doc/dpkg/spec:/usr/share/doc/libffi8/html")
               .split(os.pathsep))
SYNTHETIC_PASSAGES = int(os.environ.get("ATELIER_BENCH_PASSAGES", "100000"))
QUERIES = 100
THROUGHPUT_TARGET = 0.9
P95_TARGET_MS = 100.0

# (question, file name, a phrase the answer passage holds)
QUESTIONS = (
    ("Which lock must a frontend acquire before the dpkg database lock?", "frontend-api.txt", "lock-frontend"),
    ("What environment variable tells dpkg that the frontend lock is already held?", "frontend-api.txt",
     "DPKG_FRONTEND_LOCKED"),
    ("What kind of file locking must frontends use?", "frontend-api.txt", "fcntl"),
    ("Why is the Essential field confusing and what would replace Important?", "protected-field.txt", "Essential"),
    ("Which values can the Rules-Requires-Root field take?", "rootless-builds.txt", "binary-targets"),
    ("How does the rules file learn the value of Rules-Requires-Root?", "rootless-builds.txt",
     "DEB_RULES_REQUIRES_ROOT"),
    ("What is a dpkg trigger?", "triggers.txt", "trigger"),
    ("When does a package enter the triggers-awaited state?", "triggers.txt", "triggers-awaited"),
    ("How is a package in triggers-pending restored to installed?", "triggers.txt", "triggers-pending"),
    ("Where does memory from ffi_closure_alloc come from?", "Memory-Usage.html", "ffi_closure_alloc"),
    ("Is libffi thread-safe?", "Thread-Safety.html", "thread"),
    ("Which features are missing from libffi?", "Missing-Features.html", "Variadic closures"),
    ("Does libffi support bit fields in structures?", "Missing-Features.html", "bit fields"),
    ("How do I emulate an array with libffi?", "Arrays-Unions-Enums.html", "FFI_TYPE_STRUCT"),
    ("Which complex types does libffi support?", "Complex.html", "_Complex"),
    ("Can a platform provide several calling conventions such as stdcall and fastcall?", "Multiple-ABIs.html",
     "fastcall"),
)


def _model() -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fixtures.minilm import convert_minilm

    return convert_minilm()


def _index_corpus(work: Path, model: Path, threads: int) -> tuple[object, object, float, int]:
    from engines.documents import DocumentLibrary
    from engines.scheduler import Scheduler

    scheduler = Scheduler(work / "logs", idle_unload_s=None)
    library = DocumentLibrary(work / "data", scheduler, threads=threads)
    library.add("bench", [p for p in CORPUS if os.path.exists(p)], str(model))
    library.query("bench", "warm up", 1)  # the model is loaded before the clock starts, as in the direct run
    started = time.perf_counter()
    summary = library.index("bench")
    seconds = time.perf_counter() - started
    return scheduler, library, seconds, summary.passages


def _direct_rate(model: Path, texts: list[str], threads: int) -> float:
    import llama_cpp

    from engines.doc_index.store import FILE_NAME  # noqa: F401  (same package set as the indexer)
    from engines.llama.backends import ensure_backends_loaded

    ensure_backends_loaded()
    llm = llama_cpp.Llama(str(model), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    llm.embed(texts[:2])
    started = time.perf_counter()
    for start in range(0, len(texts), 64):  # the indexer's request size
        llm.embed(texts[start:start + 64], normalize=True)
    seconds = time.perf_counter() - started
    llm.close()
    return len(texts) / seconds


def _recall(library) -> tuple[float, list[str]]:
    missed = []
    for question, file_name, phrase in QUESTIONS:
        hits = library.query("bench", question, 5).hits
        if not any(Path(h.path).name == file_name and phrase.lower() in h.text.lower() for h in hits):
            missed.append(question)
    return 1 - len(missed) / len(QUESTIONS), missed


def _synthetic_latency(work: Path, library) -> dict:
    import numpy as np

    from engines.doc_index.search import VectorCache, search
    from engines.doc_index.store import DocumentStore, NewPassage

    with library.store() as source:
        texts = [row[0] for row in source.db.execute("SELECT text FROM passages")]
    store = DocumentStore(work / "synthetic.sqlite3")
    collection = store.create_collection("big", "/m.gguf", "synthetic", passage_tokens=256, overlap_tokens=32,
                                         query_prefix="", document_prefix="", threshold=0.3)
    rng = np.random.default_rng(7)
    per_file = min(1000, SYNTHETIC_PASSAGES)
    for file_number in range(SYNTHETIC_PASSAGES // per_file):
        vectors = rng.standard_normal((per_file, 384)).astype("<f4")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        file_id, _ = store.begin_file(collection.id, f"/synthetic/{file_number}.txt", sha256=str(file_number),
                                      size=1, mtime_ns=1, format="text", pages=None, characters=1, note="")
        store.add_passages(collection.id, file_id, [
            NewPassage(i, None, 0, 1, 200, f"{texts[(file_number * per_file + i) % len(texts)]} #{file_number}-{i}",
                       vectors[i].tobytes()) for i in range(per_file)], 384)
        store.finish_file(file_id)
    collection = store.collection("big")
    cache = VectorCache()
    questions = [q for q, _, _ in QUESTIONS]
    started = time.perf_counter()
    search(store, collection, questions[0], _unit(rng), 5, cache)
    first_ms = (time.perf_counter() - started) * 1000
    times, cpu_times = [], []
    for number in range(QUERIES):
        vector = _unit(rng)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = search(store, collection, questions[number % len(questions)], vector, 5, cache)
        times.append((time.perf_counter() - started) * 1000)
        cpu_times.append((time.process_time() - cpu_started) * 1000)
        assert result.searched == SYNTHETIC_PASSAGES
    store.close()
    return {"passages": SYNTHETIC_PASSAGES, "first_query_ms": round(first_ms, 1),
            "median_ms": round(statistics.median(times), 1), "p95_ms": _p95(times),
            "median_cpu_ms": round(statistics.median(cpu_times), 1), "p95_cpu_ms": _p95(cpu_times)}


def _p95(times: list[float]) -> float:
    return round(sorted(times)[int(0.95 * len(times)) - 1], 1)


def _unit(rng):
    import numpy as np

    vector = rng.standard_normal(384).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _question_embedding_ms(library) -> float:
    times = []
    for question, _, _ in QUESTIONS:
        started = time.perf_counter()
        library.query("bench", question, 5)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def run() -> dict:
    threads = int(os.environ.get("ATELIER_BENCH_THREADS", "2"))
    model = _model()
    with tempfile.TemporaryDirectory(prefix="bench-documents-") as folder:
        work = Path(folder)
        scheduler, library, seconds, passages = _index_corpus(work, model, threads)
        try:
            indexed_rate = passages / seconds
            with library.store() as store:
                texts = [row[0] for row in store.db.execute("SELECT text FROM passages ORDER BY id")]
            direct_rate = _direct_rate(model, texts, threads)
            recall, missed = _recall(library)
            end_to_end_ms = _question_embedding_ms(library)
            latency = _synthetic_latency(work, library)
        finally:
            scheduler.shutdown()
    ratio = indexed_rate / direct_rate
    return {
        "corpus": ", ".join(CORPUS), "passages": passages, "threads": threads,
        "load_average": round(os.getloadavg()[0], 2),
        "indexing_passages_per_s": round(indexed_rate, 2), "llama_cpp_direct_passages_per_s": round(direct_rate, 2),
        "throughput_ratio": round(ratio, 3), "throughput_target_met": ratio >= THROUGHPUT_TARGET,
        "query_100k": latency, "p95_target_met": latency["p95_ms"] <= P95_TARGET_MS,
        "query_with_question_embedding_median_ms": end_to_end_ms,
        "recall_at_5": round(recall, 3), "questions": len(QUESTIONS), "missed": missed,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
