"""The chat page's brain on the GUI side: state, store calls and the worker.

It keeps the view thin: the page forwards user actions here, and this
object turns them into store writes (always before anything risky runs)
and queued requests to the worker thread. It shows nothing itself; it
emits signals the page renders.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QThread, Signal

from engines.api import TextLoadSpec
from engines.chat.store import StoredMessage
from engines.errors import ErrorKind
from engines.host import EngineHost
from engines.library.installed import InstalledModel
from engines.workspace import Workspace
from desktop.workers.chat_worker import ChatWorker


class ChatController(QObject):
    conversations_changed = Signal()
    messages_changed = Signal(int)  # conversation id
    streaming_changed = Signal(bool)
    stream_text = Signal(int, str)  # conversation id, full text so far
    status = Signal(str)
    stats = Signal(object)
    banner = Signal(str)  # "" hides it
    model_info = Signal(object)
    overflow_question = Signal(int)  # conversation id: ask the user what to do
    _run = Signal(int, object, object, str)
    _unload = Signal()

    def __init__(self, workspace: Workspace, host=None, parent=None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.store = workspace.open_chats()
        self.store.recover_interrupted()
        self.current_id: int | None = None
        self.streaming = False
        self._stream_parts: list[str] = []
        self._stream_conversation: int | None = None
        host = host or EngineHost(workspace.engine_log("text"), role="text")
        self._thread = QThread()
        self._thread.setObjectName("chat-worker")
        self.worker = ChatWorker(workspace.open_chats, host)
        self.worker.moveToThread(self._thread)
        self._run.connect(self.worker.run_turn)
        self._unload.connect(self.worker.unload)
        self.worker.tokens.connect(self._on_tokens)
        self.worker.progress.connect(self.status)
        self.worker.stats.connect(self.stats)
        self.worker.finished.connect(self._on_finished)
        self.worker.model_loaded.connect(self.model_info)
        self._thread.start()

    # ---- conversations ---------------------------------------------------

    def conversations(self, search: str = ""):
        return self.store.list_conversations(search)

    def select(self, conversation_id: int | None) -> None:
        self.current_id = conversation_id
        self.messages_changed.emit(conversation_id or 0)

    def new_conversation(self, sampling=None, system_prompt: str = "") -> int:
        """A new chat, starting from the settings currently shown in the panel."""
        conversation = self.store.create_conversation(
            model_id=self.workspace.settings.last_model_id, system_prompt=system_prompt, sampling=sampling
        )
        self.current_id = conversation.id
        self.conversations_changed.emit()
        self.messages_changed.emit(conversation.id)
        return conversation.id

    def rename(self, conversation_id: int, title: str) -> None:
        self.store.rename_conversation(conversation_id, title)
        self.conversations_changed.emit()

    def delete(self, conversation_id: int) -> None:
        if self.streaming and self._stream_conversation == conversation_id:
            self.stop()
        self.store.delete_conversation(conversation_id)
        if self.current_id == conversation_id:
            remaining = self.store.list_conversations()
            self.current_id = remaining[0].id if remaining else None
        self.conversations_changed.emit()
        self.messages_changed.emit(self.current_id or 0)

    def messages(self) -> list[StoredMessage]:
        return self.store.messages(self.current_id) if self.current_id else []

    # ---- models ----------------------------------------------------------

    def models(self) -> list[InstalledModel]:
        return self.workspace.models.runnable("chat")  # the chat picker offers chat models only

    def current_model(self) -> InstalledModel | None:
        model_id = None
        if self.current_id:
            model_id = self.store.get_conversation(self.current_id).model_id
        model_id = model_id or self.workspace.settings.last_model_id
        model = self.workspace.models.get(model_id) if model_id else None
        if model is None or model.kind != "chat":
            models = self.models()
            model = models[0] if models else None
        return model

    def choose_model(self, model_id: str) -> None:
        self.workspace.settings.last_model_id = model_id
        self.workspace.save_settings()
        if self.current_id:
            self.store.set_conversation_model(self.current_id, model_id)

    def load_spec(self, model: InstalledModel) -> TextLoadSpec:
        prefs = self.workspace.settings.prefs_for(model.id)
        return TextLoadSpec(model.path, prefs.context_length, prefs.threads, prefs.gpu_layers, prefs.cache_type)

    def set_load_prefs(self, prefs) -> None:
        model = self.current_model()
        if model is not None:
            self.workspace.settings.load_prefs[model.id] = prefs
            self.workspace.save_settings()

    def unload(self) -> None:
        if not self.streaming:
            self._unload.emit()
            self.status.emit("Model unloaded; its memory was given back.")

    # ---- sending ---------------------------------------------------------

    def send(self, text: str, sampling=None, system_prompt: str = "") -> bool:
        """Save the user's message, then ask the worker for a reply.

        ``sampling`` and ``system_prompt`` seed a chat created by this message.
        """
        if self.streaming or not text.strip():
            return False
        model = self.current_model()
        if model is None:
            self.banner.emit("Add a model first: use “Add model file…” or drop a .gguf file onto the window.")
            return False
        if self.current_id is None:
            self.new_conversation(sampling, system_prompt)
        self.store.set_conversation_model(self.current_id, model.id)
        self.store.add_message(self.current_id, "user", text)
        self.conversations_changed.emit()
        self._start_turn(model)
        return True

    def regenerate(self) -> bool:
        if self.streaming or not self.current_id:
            return False
        messages = self.store.messages(self.current_id)
        if not messages:
            return False
        if messages[-1].role == "assistant":
            self.store.delete_messages_from(self.current_id, messages[-1].position)
        if not any(m.role == "user" for m in self.store.messages(self.current_id)):
            return False
        model = self.current_model()
        if model is None:
            return False
        self._start_turn(model)
        return True

    def last_user_message(self) -> StoredMessage | None:
        return next((m for m in reversed(self.messages()) if m.role == "user"), None)

    def edit_and_resend(self, text: str) -> bool:
        last = self.last_user_message()
        if self.streaming or last is None or not text.strip():
            return False
        self.store.edit_message(last.id, text)
        self.store.delete_messages_from(self.current_id, last.position + 1)
        model = self.current_model()
        if model is None:
            return False
        self._start_turn(model)
        return True

    def stop(self) -> None:
        if self.streaming:
            self.worker.cancel()
            self.status.emit("Stopping…")

    def resolve_overflow(self, drop_oldest: bool) -> None:
        """The user's answer to 'the conversation no longer fits'."""
        model = self.current_model()
        if drop_oldest and model is not None:
            self._start_turn(model, overflow="drop_oldest")

    def _start_turn(self, model: InstalledModel, overflow: str | None = None) -> None:
        policy = overflow or self.workspace.settings.overflow_policy
        if policy == "ask":
            policy = "stop"
        self.streaming = True
        self._stream_parts = []
        self._stream_conversation = self.current_id
        self.banner.emit("")
        self.streaming_changed.emit(True)
        self.messages_changed.emit(self.current_id)
        self.status.emit(f"Loading {model.name}…" if self.worker.host.model_info is None else "Thinking…")
        self._run.emit(self.current_id, model, self.load_spec(model), policy)

    def _on_tokens(self, conversation_id: int, text: str) -> None:
        self._stream_parts.append(text)
        self.stream_text.emit(conversation_id, "".join(self._stream_parts))

    def _on_finished(self, conversation_id: int, outcome) -> None:
        self.streaming = False
        self._stream_parts = []
        self._stream_conversation = None
        self.streaming_changed.emit(False)
        self.conversations_changed.emit()
        self.messages_changed.emit(conversation_id)
        error = outcome.error
        if error is None:
            result = outcome.result
            self.status.emit("Stopped." if result.finish_reason == "cancelled" else "")
            return
        self.status.emit("")
        if error.kind == ErrorKind.CONTEXT_OVERFLOW and self.workspace.settings.overflow_policy == "ask":
            self.overflow_question.emit(conversation_id)
            return
        if error.kind == ErrorKind.CRASHED:
            self.banner.emit(f"{error.message} Your conversation is saved; send a message to start the engine again.")
        else:
            self.banner.emit(error.message)

    def shutdown(self) -> None:
        if self.streaming:
            self.worker.cancel()
        self._thread.quit()
        self._thread.wait(10000)
        self.worker.shutdown()  # the thread is done: safe to call directly
        self.store.close()
