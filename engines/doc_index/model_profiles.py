"""What each embedding model family needs around its texts, and the similarity that counts as relevant.

Retrieval models are trained with fixed prefixes (nomic-embed-text's
``search_query:``/``search_document:``, e5's ``query:``/``passage:``,
bge's instruction before a question); without them recall drops. Their
cosine similarities also live on different scales (e5's rarely fall below
0.7), so the threshold under which "nothing relevant was found" is per
family. all-MiniLM-L6-v2's was calibrated on the benchmark's corpus
(benchmarks/bench_documents.py, Debian's dpkg specifications and libffi
manual): the best passage for its 16 questions scored 0.49-0.80, for 8
unrelated questions 0.06-0.15. The others are estimates from their model
cards' typical scales until measured; a collection keeps its own value (the
store's ``threshold`` column), so calibrating later changes no collection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelProfile:
    family: str
    query_prefix: str = ""
    document_prefix: str = ""
    threshold: float = 0.3


_PROFILES = (
    ("nomic-embed", ModelProfile("nomic-embed-text", "search_query: ", "search_document: ", 0.45)),
    ("e5", ModelProfile("e5", "query: ", "passage: ", 0.78)),
    ("bge", ModelProfile("bge", "Represent this sentence for searching relevant passages: ", "", 0.5)),
    ("minilm", ModelProfile("all-MiniLM", "", "", 0.3)),
)
DEFAULT_PROFILE = ModelProfile("other", "", "", 0.3)


def profile_for(model_path: str, model_name: str = "") -> ModelProfile:
    """The profile whose family the file name or the GGUF's name mentions (case and punctuation ignored)."""
    words = f"{Path(model_path).name} {model_name}".lower().replace("_", "-").replace(" ", "-")
    for needle, profile in _PROFILES:
        if needle in words:
            return profile
    return DEFAULT_PROFILE
