"""Chat with your own documents, privately: the API the GUI and the CLI use.

Everything runs on this machine: files are read, split and embedded by the
documents engine in an engine host (:mod:`engines.doc_index`), and the
index is ``documents.sqlite3`` in the profile's data folder.

**From a GUI worker** (a QThread; every call below blocks, and a
:class:`DocumentLibrary` opens its own SQLite connection per call, so it
may be used from any thread)::

    library = DocumentLibrary(workspace.paths.data, scheduler)   # the window's one scheduler
    library.add("Taxes", ["/home/me/Taxes"], model_path)          # new collection, or more folders
    summary = library.index("Taxes", on_progress, stop_event)     # resumable; stop_event pauses
    result = library.query("Taxes", "When is the deadline?", top_k=5)
    grounding = ground(library, "Taxes", question, budget_chars, template)  # for a chat turn
    library.remove("Taxes")                                       # or library.remove("Taxes", [path])

- ``on_progress(IndexProgress)`` is called on the worker's thread after
  each file and each batch of passages: ``files_done``/``files_total``,
  ``passages_done``, ``seconds_left`` (None at first), ``current`` (the
  file) and ``last`` (an :class:`IndexFileResult`: ``state`` indexed /
  unchanged / partial / skipped, ``reason`` for a skipped file).
- ``index`` returns an :class:`IndexSummary` (counts, the skipped files
  with reasons, ``stopped`` when paused) and raises ``EngineError`` only
  when the embedding model itself cannot run (its sentence is the banner).
- Files and their state: ``library.files(name)`` gives ``FileRecord`` rows;
  :func:`file_status` turns one into the dict the list shows (``state``:
  indexed, changed, deleted, partial, pending, skipped; ``reason``; ``note``;
  ``passages``; ``pages``).
- A **citation** is a :class:`PassageHit`: ``path``, ``page`` (1-based, PDF
  only, else None), ``start``/``end`` (characters in that page's text, or
  the file's), ``text``, ``score`` (fused rank), ``similarity`` (cosine).
  :class:`Grounding` carries the system text for the model, the
  citations, its ``mode`` (``excerpts``, ``full_text`` or ``nothing``)
  and ``notice``, a sentence for the user when nothing relevant was found.
"""

from engines.doc_index.store import Collection, FileRecord
from engines.doc_index.types import IndexFileResult, PassageHit, SearchResult
from engines.documents.grounding import DEFAULT_GROUNDING_PROMPT, Grounding, ground, nothing_relevant
from engines.documents.library import DocumentLibrary, IndexProgress, IndexSummary, file_status

__all__ = [
    "Collection", "DEFAULT_GROUNDING_PROMPT", "DocumentLibrary", "FileRecord", "Grounding", "IndexFileResult",
    "IndexProgress", "IndexSummary", "PassageHit", "SearchResult", "file_status", "ground", "nothing_relevant",
]
