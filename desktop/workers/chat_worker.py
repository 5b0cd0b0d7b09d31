"""Runs chat turns on a worker thread and batches tokens for the view.

The worker owns the engine host and lives in its own QThread. It talks to
the GUI only through queued signals. Stop is not a signal (a queued signal
would wait behind the busy generation loop): the GUI calls
:meth:`ChatWorker.cancel`, which sets the engine host's shared flag.
Tokens are grouped and sent about every 30 ms, so painting never falls
behind a fast model.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Signal, Slot

from engines.api import FinishedEvent, NoticeEvent, ProgressEvent, StatsEvent, TextLoadSpec, TokenEvent
from engines.chat.session import ChatTurn
from engines.library.demo import materialize
from engines.library.installed import InstalledModel

BATCH_INTERVAL_S = 0.03


class ChatWorker(QObject):
    tokens = Signal(int, str)  # conversation id, text since the last batch
    progress = Signal(str)
    stats = Signal(object)  # StatsEvent
    notice = Signal(int, str)
    model_loaded = Signal(object)  # ModelInfo
    finished = Signal(int, object)  # conversation id, TurnOutcome
    unloaded = Signal()

    def __init__(self, store_factory, host) -> None:
        super().__init__()
        self._store_factory = store_factory
        self._store = None
        self._host = host

    @property
    def host(self):
        return self._host

    def cancel(self) -> None:
        """Called from the GUI thread: sets a flag the engine polls every token."""
        self._host.cancel()

    @Slot(int, object, object, str)
    def run_turn(self, conversation_id: int, model: InstalledModel, spec: TextLoadSpec, overflow: str) -> None:
        if self._store is None:
            self._store = self._store_factory()  # SQLite connection owned by this thread
        pending: list[str] = []
        last_emit = time.monotonic()

        def flush() -> None:
            nonlocal last_emit
            if pending:
                self.tokens.emit(conversation_id, "".join(pending))
                pending.clear()
            last_emit = time.monotonic()

        def on_event(event) -> None:
            if isinstance(event, TokenEvent):
                pending.append(event.text)
                if time.monotonic() - last_emit >= BATCH_INTERVAL_S:
                    flush()
            elif isinstance(event, StatsEvent):
                self.stats.emit(event)
            elif isinstance(event, ProgressEvent):
                self.progress.emit(event.message)
            elif isinstance(event, NoticeEvent):
                self.notice.emit(conversation_id, event.message)
            elif isinstance(event, FinishedEvent):
                flush()

        def prepare() -> None:
            if model.source == "demo" and not model.exists:
                self.progress.emit("Unpacking the demo model (first run only)…")
            materialize(model)

        turn = ChatTurn(self._store, self._host, conversation_id, spec, overflow=overflow)
        outcome = turn.run(on_event, prepare=prepare)
        flush()
        if self._host.model_info is not None:
            self.model_loaded.emit(self._host.model_info)
        self.finished.emit(conversation_id, outcome)

    @Slot()
    def unload(self) -> None:
        self._host.close()
        self.unloaded.emit()

    @Slot()
    def shutdown(self) -> None:
        self._host.close()
        if self._store is not None:
            self._store.close()
            self._store = None
