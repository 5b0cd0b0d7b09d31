"""Documents in the chat page: the panel's Documents box, grounding a turn, and the sources under replies.

:class:`DocumentsBox` sits in the chat's right-hand panel under the model:
one drop-down, "None" or a collection of the Documents page. Choosing one
attaches it to the chat at once (``engines.chat.citations``); a new chat
keeps the choice until its first message creates it. The choice is shown
again whenever the chat is reopened.

When a turn starts (``streaming_changed(True)``, on the GUI thread) the
attached collection, the Settings' grounding prompt and the model's
context length are taken as a snapshot; the worker then calls
:meth:`ChatDocuments.open_turn` on its own thread, and the turn calls the
returned ``ground(store, request, reply_id)`` before the model loads. It
runs :func:`engines.documents.grounding.grounded_request`, the same
function as ``atelier chat --docs``: the passages (or the whole
collection, when it fits) count in the context fit, and the sources are
saved with the reply. A grounded reply lists them under its text; the
file name opens the file (at its page), "passage" shows the text.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QComboBox, QGroupBox, QLabel, QMessageBox, QVBoxLayout, QWidget

from desktop.chat.citations import open_source, where
from engines.errors import EngineError, ErrorKind

NONE_LABEL = "None"
NO_COLLECTIONS = "No collections yet: make one on the Documents page, then attach it here."
CLIENT = "chat documents"  # whom the scheduler's fair queue serves while a chat question is searched


class DocumentsBox(QGroupBox):
    """The Documents section of the chat panel; ``chosen_changed(name or "")`` when the user picks another."""

    chosen_changed = Signal(str)
    shown = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Documents (this chat)", parent)
        self.setObjectName("DocumentsBox")
        self._updating = False
        self._remote: str | None = None  # the remote server the chat's model runs on, if it does
        layout = QVBoxLayout(self)
        self.combo = QComboBox()
        self.combo.setToolTip("Answer from a collection of your documents: its passages go to the model, and the "
                              "answer lists them as its sources")
        layout.addWidget(self.combo)
        self.note = QLabel()
        self.note.setObjectName("Muted")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self.combo.currentIndexChanged.connect(self._changed)

    def set_collections(self, names: list[str], chosen: str | None) -> None:
        """The collections to offer; one the chat is attached to stays offered even when it is gone."""
        self._updating = True
        self.combo.clear()
        self.combo.addItem(NONE_LABEL, "")
        for name in names:
            self.combo.addItem(name, name)
        if chosen and chosen not in names:
            self.combo.addItem(f"{chosen} (removed)", chosen)
        index = self.combo.findData(chosen or "")
        self.combo.setCurrentIndex(max(0, index))
        self._updating = False
        self._show_note(names)

    def chosen(self) -> str | None:
        return self.combo.currentData() or None

    def set_remote(self, server: str | None) -> None:
        """The chat's model runs on this remote server (None: on this computer): the passages would go there."""
        self._remote = server
        self._show_note([self.combo.itemData(i) for i in range(1, self.combo.count())])

    def _show_note(self, names: list[str]) -> None:
        chosen = self.chosen()
        if chosen and self._remote:
            self.note.setText(f"Answers come from '{chosen}'. The model runs on the remote server '{self._remote}', "
                              "so the passages found are sent to it with your question.")
        elif chosen:
            self.note.setText(f"Answers come from '{chosen}' and list their sources under them.")
        else:
            self.note.setText(NO_COLLECTIONS if not names else "Attach a collection to answer from your documents.")

    def _changed(self, _index: int) -> None:
        if self._updating:
            return
        self._show_note([self.combo.itemData(i) for i in range(1, self.combo.count())])
        self.chosen_changed.emit(self.chosen() or "")

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().showEvent(event)
        self.shown.emit()


class ChatDocuments(QObject):
    """The chat page's documents: the panel's box, the snapshot a turn takes, and the sources under replies."""

    def __init__(self, page) -> None:
        super().__init__(page)
        self.page = page
        self.controller = page.controller
        self._loaded_for: int | None = -1  # the chat whose choice the box shows
        self._snapshot: tuple | None = None  # (collection, library, template, context tokens, stopped) for a turn
        self._stopped = threading.Event()  # Stop pressed while the question was searched
        self._sources: dict[str, object] = {}  # message key -> ReplySources, for the links
        self.box = DocumentsBox()
        panel_layout = page.panel.widget().layout()
        panel_layout.insertWidget(1, self.box)  # right under the model: one click to attach
        self.box.chosen_changed.connect(self._chosen)
        self.box.shown.connect(self.refresh_collections)
        c = self.controller
        c.streaming_changed.connect(self._streaming_changed)
        c.messages_changed.connect(self._chat_shown)
        c.worker.documents_for = self
        page.view.source_clicked.connect(self._source_clicked)
        page.model_shown.connect(self._model_shown)
        self.refresh_collections()

    # ---- the library -----------------------------------------------------

    def _scheduler(self):
        """The window's one scheduler (a chat model and an embedding model take turns on it)."""
        window_scheduler = getattr(self.page.window(), "scheduler", None)
        return window_scheduler or getattr(self.controller.worker.host, "_scheduler", None)

    def library(self):
        from engines.documents import DocumentLibrary

        return DocumentLibrary(self.controller.workspace.paths.data, self._scheduler(), client=CLIENT)

    def collection_names(self) -> list[str]:
        """The collections' names, read straight from the index (engines.documents, which pulls in the GGUF
        reader and numpy, is imported only when a turn is grounded); none before the first collection."""
        from engines.doc_index.store import FILE_NAME, DocumentStore

        database = self.controller.workspace.paths.data / FILE_NAME
        if not database.exists():
            return []
        try:
            with DocumentStore(database) as store:
                return [c.name for c in store.collections()]
        except Exception:  # noqa: BLE001 - an unreadable index offers none; the Documents page says why
            return []

    def refresh_collections(self) -> None:
        """Offer the collections again (the Documents page may have changed them), keeping the chat's choice."""
        names = self.collection_names()
        chosen = self.box.chosen() if self._loaded_for != -1 else None
        self.box.set_collections(names, chosen)

    def _model_shown(self, model) -> None:
        remote = model is not None and getattr(model, "engine", "") == "remote"
        self.box.set_remote(model.server.name if remote else None)

    def attached(self) -> str | None:
        return self.box.chosen()

    def attach(self, name: str | None) -> None:
        """Attach ``name`` (None: detach) to the chat on show, as the drop-down does."""
        self.refresh_collections()
        index = self.box.combo.findData(name or "")
        self.box.combo.setCurrentIndex(max(0, index))

    def _chat_shown(self, conversation_id: int) -> None:
        current = self.controller.current_id or 0
        if conversation_id != current or current == self._loaded_for:
            return
        self._loaded_for = current
        chosen = None
        if current:
            from engines.chat.citations import chat_collection

            try:
                chosen = chat_collection(self.controller.store, current)
            except Exception:  # noqa: BLE001 - a chat that cannot be read shows none; the page shows the error
                chosen = None
        self.box.set_collections(self.collection_names(), chosen)

    def _chosen(self, _name: str) -> None:
        self._save(self.controller.current_id)

    def _save(self, conversation_id: int | None) -> None:
        if not conversation_id:
            return
        from engines.chat.citations import set_chat_collection
        from engines.chat.errors import ChatStoreError

        try:
            set_chat_collection(self.controller.store, conversation_id, self.box.chosen())
        except ChatStoreError as exc:
            self.page._show_banner(f"The chat's documents could not be saved: {exc}")

    # ---- a turn --------------------------------------------------------------

    def _streaming_changed(self, streaming: bool) -> None:
        if not streaming:
            return
        c = self.controller
        conversation_id = c.current_id or 0
        self._loaded_for = conversation_id  # a chat created by this message keeps what the box shows
        self._save(conversation_id)
        collection = self.box.chosen()
        self._snapshot = None
        self._stopped = threading.Event()
        if collection:
            model = c.current_model()
            spec = c.load_spec(model) if model is not None else None
            context = getattr(spec, "context_length", None) or 4096
            self._snapshot = (collection, self.library(), c.workspace.settings.grounding_prompt, context,
                              self._stopped)

    def open_turn(self, conversation_id: int):
        """On the worker's thread: the turn's ``ground`` callable, or None when the chat has no collection."""
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is None:
            return None
        collection, library, template, context, stopped = snapshot
        progress = self.controller.worker.progress

        def ground(store, request, reply_id: int):
            from engines.chat.citations import save_sources
            from engines.chat.errors import ChatNotFound, ChatStoreError
            from engines.documents.grounding import grounded_request

            progress.emit(f"Searching '{collection}'…")
            try:
                grounding, grounded = grounded_request(library, collection, request, context, template)
            except EngineError as exc:
                if exc.kind == ErrorKind.NOT_FOUND:  # removed on the Documents page since it was attached
                    raise EngineError(ErrorKind.NOT_FOUND, f"The collection '{collection}' attached to this chat no "
                                      "longer exists: attach another in the Documents box, or choose None.") from None
                raise
            if stopped.is_set():  # Stop while the question was searched: no model is loaded, nothing is written
                raise EngineError(ErrorKind.CANCELLED, "Stopped.")
            try:
                save_sources(store, reply_id, store.get_message(reply_id).version, collection, grounding)
            except (ChatStoreError, ChatNotFound) as exc:  # the answer still comes; only its list of sources is lost
                progress.emit(f"The sources of this answer could not be saved: {exc}")
            if grounding.notice:
                progress.emit(grounding.notice)
            return grounded

        return ground

    def cancel(self) -> None:
        """Stop (GUI thread, through the worker): the turn ends once the search in hand returns."""
        self._stopped.set()

    # ---- sources under replies -----------------------------------------------

    def saved_sources(self) -> dict[int, object]:
        """The current chat's grounded replies' sources, by message id (the versions on show)."""
        c = self.controller
        if not c.current_id:
            return {}
        from engines.chat.citations import sources_in

        found = sources_in(c.store, c.current_id)
        self._sources = {str(message_id): sources for message_id, sources in found.items()}
        return found

    @Slot(str, str, int)
    def _source_clicked(self, action: str, message_key: str, number: int) -> None:
        sources = self._sources.get(message_key)
        citation = next((s for s in sources.citations if s.number == number), None) if sources else None
        if citation is None:
            return
        if action == "open":
            open_source(citation.path, citation.page, self.page._show_banner)
        else:
            self.show_passage(citation)

    def show_passage(self, citation) -> QMessageBox:
        """The passage the model was given, with where it is; "Open file" opens it at its page."""
        box = QMessageBox(self.page)
        box.setWindowTitle(f"[{citation.number}] {where(citation)}")
        box.setText(f"{citation.path}" + (f", page {citation.page}" if citation.page else "") +
                    f", characters {citation.start}-{citation.end}")
        box.setInformativeText(citation.text)
        box.setStandardButtons(QMessageBox.StandardButton.Close)
        open_button = box.addButton("Open file", QMessageBox.ButtonRole.ActionRole)
        open_button.clicked.connect(lambda: open_source(citation.path, citation.page, self.page._show_banner))
        box.setModal(False)
        box.show()
        self.passage_box = box
        return box


__all__ = ["ChatDocuments", "DocumentsBox"]
