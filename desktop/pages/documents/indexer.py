"""Indexing a collection in the background, on the window's one scheduler, with progress for the page.

:meth:`DocumentLibrary.index` blocks until the collection is up to date
(each file is read and embedded by the documents engine in an engine
host, which commits every batch), so it runs on a thread of its own; its
progress callbacks, the summary and a failure come back to the GUI thread
as queued signals. Pause sets the run's stop event: the run ends after
the request in hand (what was embedded stays), and Index starts a new
run that resumes where it stopped. One run at a time per page.
"""

from __future__ import annotations

import copy
import logging
import threading

from PySide6.QtCore import QObject, Signal

from engines.errors import EngineError

log = logging.getLogger(__name__)


class IndexRunner(QObject):
    """One background indexing run at a time; ``progress``/``finished``/``failed`` arrive on the GUI thread."""

    started = Signal(str)  # collection
    progress = Signal(str, object)  # collection, a copy of the IndexProgress
    finished = Signal(str, object)  # collection, IndexSummary
    failed = Signal(str, str)  # collection, the sentence for the banner

    def __init__(self, library_of, parent=None) -> None:
        """``library_of()``: the page's DocumentLibrary (made when first needed)."""
        super().__init__(parent)
        self._library_of = library_of
        self.collection: str | None = None  # the collection being indexed, None when idle
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.collection is not None

    def start(self, name: str) -> bool:
        """Index ``name`` (resuming what an earlier run left); False when a run is already going."""
        if self.running:
            return False
        self.collection = name
        self._stop = threading.Event()
        stop = self._stop
        self._thread = threading.Thread(target=self._run, args=(name, stop), name="documents-index", daemon=True)
        self.started.emit(name)
        self._thread.start()
        return True

    def pause(self) -> None:
        """Stop after the request in hand; what was embedded is kept, and the next run resumes after it."""
        self._stop.set()

    def _run(self, name: str, stop: threading.Event) -> None:
        try:
            summary = self._library_of().index(name, lambda p: self.progress.emit(name, copy.copy(p)), stop)
        except EngineError as exc:
            self._end()
            self.failed.emit(name, exc.message)
            return
        except Exception as exc:  # noqa: BLE001 - the page must hear the end, whatever happened
            log.exception("indexing %s failed", name)
            self._end()
            self.failed.emit(name, f"Indexing '{name}' failed: {exc}")
            return
        self._end()
        self.finished.emit(name, summary)

    def _end(self) -> None:
        self.collection = None

    def shutdown(self, wait_s: float = 0.2) -> None:
        """Pause the run and wait a moment for it; a request in hand ends when the scheduler stops its host.

        Not longer: every batch is committed as it is embedded, so nothing is lost by not waiting, and a
        window must close at once.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait_s)
