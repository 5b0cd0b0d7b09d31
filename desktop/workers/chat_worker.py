"""Runs chat turns on a worker thread and batches tokens for the view.

The worker drives the engine through the host it is given: the app's one
scheduler's :class:`engines.scheduler.ScheduledHost`, so a reply waits its
turn behind an image on a small machine, and a model the server already
loaded is not loaded again. It lives in its own QThread. It talks to
the GUI only through queued signals. Stop is not a signal (a queued signal
would wait behind the busy generation loop): the GUI calls
:meth:`ChatWorker.cancel`, which cancels the request in hand (waiting,
loading or generating).
Tokens are grouped and sent about every 30 ms, so painting never falls
behind a fast model.

``finished`` is emitted after every turn, whatever went wrong: a GUI that
waits for it can never be left stuck in "streaming". When the window
closes mid-reply, :meth:`ChatWorker.abandon` (any thread) kills the engine
host, so a host that no longer answers cannot hold the close up; the turn
then ends at once and saves the reply as interrupted.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from PySide6.QtCore import QObject, Signal, Slot

from engines.api import FinishedEvent, NoticeEvent, ProgressEvent, StatsEvent, TextLoadSpec, TokenEvent
from engines.chat.errors import ChatStoreError
from engines.chat.session import ChatTurn, TurnOutcome
from engines.errors import EngineError, ErrorKind
from engines.library.demo import materialize
from engines.library.installed import InstalledModel

log = logging.getLogger(__name__)

BATCH_INTERVAL_S = 0.03


class ChatWorker(QObject):
    tokens = Signal(int, str)  # conversation id, text since the last batch
    progress = Signal(str)
    stats = Signal(object)  # StatsEvent
    notice = Signal(int, str)
    model_loaded = Signal(object)  # ModelInfo
    finished = Signal(int, object)  # conversation id, TurnOutcome
    unloaded = Signal()
    tool_event = Signal(int, object)  # conversation id, a ToolCallEvent or ToolProgressEvent of the tool loop
    # Set by the chat page (desktop.chat.chat_tools.ChatTools): open_turn(conversation id) on this thread gives a
    # turn its tools, approvals and reply schema (or None); cancel() refuses a call waiting for approval.
    tools_for = None
    # Set by the chat page (desktop.chat.chat_documents.ChatDocuments): open_turn(conversation id) on this thread
    # gives a turn its documents (a ground(store, request, reply id) callable) or None; cancel() ends a turn
    # whose question is being searched.
    documents_for = None

    def __init__(self, store_factory, host) -> None:
        super().__init__()
        self._store_factory = store_factory
        self._store = None
        self._host = host
        self.closing = threading.Event()  # set when the app closes: turns say so instead of blaming the engine

    @property
    def host(self):
        return self._host

    def cancel(self) -> None:
        """Called from the GUI thread: sets a flag the engine polls every token."""
        if self.tools_for is not None:
            self.tools_for.cancel()
        if self.documents_for is not None:
            self.documents_for.cancel()
        self._host.cancel()

    def abandon(self) -> None:
        """Called from the GUI thread on close: end the engine host now, even if it no longer answers."""
        self.closing.set()
        if self.tools_for is not None:
            self.tools_for.cancel()
        if self.documents_for is not None:
            self.documents_for.cancel()
        self._host.cancel()
        kill = getattr(self._host, "kill", None)
        if kill is not None:
            try:
                kill()
            except OSError:
                pass  # already gone

    @Slot(int, object, object, str, object)
    def run_turn(self, conversation_id: int, model: InstalledModel, spec: TextLoadSpec, overflow: str,
                 regenerate_id: int | None = None) -> None:
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
            else:  # the tool loop's call and progress events
                flush()
                self.tool_event.emit(conversation_id, event)

        def prepare() -> None:
            if model.source == "demo" and not model.exists:
                self.progress.emit("Unpacking the demo model (first run only)…")
            materialize(model)

        outcome = TurnOutcome(None, "", error=EngineError(ErrorKind.INTERNAL, "The reply could not start."))
        tools = None
        try:
            if self._store is None:
                self._store = self._store_factory()  # a SQLite connection of this thread's own
            tools = self.tools_for.open_turn(conversation_id) if self.tools_for is not None else None
            turn = ChatTurn(self._store, tools.host(self._host) if tools else self._host, conversation_id, spec,
                            overflow=overflow, engine=model.engine or "llama_cpp", regenerate_id=regenerate_id,
                            closing=self.closing, **(tools.turn_args() if tools else {}),
                            ground=self.documents_for.open_turn(conversation_id) if self.documents_for else None)
            outcome = turn.run(on_event, prepare=prepare)
        except (ChatStoreError, sqlite3.Error) as exc:  # this thread's connection could not be opened
            outcome = TurnOutcome(None, "", save_error=str(exc))
        except Exception as exc:  # noqa: BLE001 - the GUI must hear 'finished' whatever happened
            log.exception("chat turn failed")
            outcome = TurnOutcome(None, "", error=EngineError(ErrorKind.INTERNAL, f"The reply failed: {exc}"))
        finally:
            if tools is not None:
                tools.close()
            flush()
            if self._host.model_info is not None:
                self.model_loaded.emit(self._host.model_info)
            self.finished.emit(conversation_id, outcome)

    @Slot()
    def unload(self) -> None:
        self._host.close()
        self.unloaded.emit()

    def shutdown(self) -> None:
        """End the host and close this worker's connection; only once its thread has stopped."""
        self._host.close()
        if self._store is not None:
            self._store.close()
            self._store = None
