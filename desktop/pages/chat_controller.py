"""The chat page's brain on the GUI side: state, store calls and the worker.

It keeps the view thin: the page forwards user actions here, and this
object turns them into store writes (always before anything risky runs)
and queued requests to the worker thread. It shows nothing itself; it
emits signals the page renders.

Nothing the history can throw escapes a slot: a write that fails emits a
banner and returns False (the caller keeps what the user typed); reads
raise :class:`ChatStoreError` to the page, which shows that this chat
cannot be read instead of another chat's messages. A reply whose final
save failed stays in memory (shown, marked unsaved) and is saved again at
the next write and every few seconds until it is.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from PySide6.QtCore import QObject, QThread, QTimer, Signal

from engines.api import TextLoadSpec
from engines.chat.errors import ChatNotFound, ChatStoreError
from engines.chat.opening import HistoryProblem, open_history
from engines.chat.records import StoredMessage
from engines.chat.session import UnsavedReply, save_unsaved
from engines.errors import ErrorKind
from engines.library.installed import InstalledModel
from engines.remote import RemoteServers, find_remote_model, remote_models
from engines.workspace import Workspace
from desktop.workers.background import run_in_background
from desktop.workers.chat_worker import ChatWorker
from desktop.workers.speed_recorder import record_reply_speed

log = logging.getLogger(__name__)

RETRY_UNSAVED_MS = 5000
SHUTDOWN_WAIT_MS = 5000  # for the worker to end its turn once the engine host is killed
CLIENT = "chat page"  # whom the scheduler's fair queue serves
UNSAVED_NOTE = "Not saved yet: Atelier keeps this reply and saves it as soon as the chat history can be written."


class ChatController(QObject):
    conversations_changed = Signal()
    messages_changed = Signal(int)  # conversation id (0: the new, unsaved chat)
    streaming_changed = Signal(bool)
    stream_text = Signal(int, str)  # conversation id, full text so far
    status = Signal(str)
    stats = Signal(object)
    banner = Signal(str)  # "" hides it
    history_notice = Signal(str, bool)  # text ("" hides it), offer "Recover what can be read"
    model_info = Signal(object)
    overflow_question = Signal(int)  # conversation id: ask the user what to do
    _run = Signal(int, object, object, str, object)
    _unload = Signal()

    def __init__(self, workspace: Workspace, host=None, parent=None, scheduler=None) -> None:
        """``scheduler``: the app's one engine scheduler (the window's); without it, one of its own.
        ``host``: a stand-in for the scheduler's host (tests)."""
        super().__init__(parent)
        self.workspace = workspace
        self.store, self.history_problem = open_history(workspace.paths.database)
        self.current_id: int | None = None  # None: a new chat, saved with its first message
        self.streaming = False
        self._stream_parts: list[str] = []
        self._stream_conversation: int | None = None
        self.regenerating_id: int | None = None  # the reply being rewritten (the view hides its old text)
        self._turn_model: InstalledModel | None = None
        self._unsaved: dict[int, UnsavedReply] = {}
        self._recovery = None
        self._shut_down = False
        self.worker_stopped = True
        self._retry = QTimer(self)
        self._retry.setInterval(RETRY_UNSAVED_MS)
        self._retry.timeout.connect(self._retry_unsaved)
        self.remote_servers = RemoteServers.beside(workspace.models.file)
        self._own_scheduler = None
        if host is None:
            if scheduler is None:
                scheduler = self._own_scheduler = workspace.scheduler()
            host = scheduler.host_for(CLIENT)  # local models and remote ones (NAME/MODEL) alike
        self._thread = QThread()
        self._thread.setObjectName("chat-worker")
        self.worker = ChatWorker(self.store.another_connection, host)
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
        """The chat list; raises :class:`ChatStoreError` when it cannot be read."""
        return self.store.list_conversations(search)

    def conversation(self, conversation_id: int):
        return self.store.get_conversation(conversation_id)

    def select(self, conversation_id: int | None) -> None:
        if conversation_id != self.current_id:
            self._leave_current()
        self.current_id = conversation_id
        self.messages_changed.emit(conversation_id or 0)

    def start_new_chat(self) -> None:
        """A new chat: nothing is saved until its first message, so empty chats never pile up."""
        self._leave_current()
        self.current_id = None
        self.conversations_changed.emit()
        self.messages_changed.emit(0)

    def _leave_current(self) -> None:
        """Remove the chat being left if the user put nothing into it (one from before, or a failed send)."""
        previous = self.current_id
        if previous is None or (self.streaming and self._stream_conversation == previous):
            return
        try:
            if self.store.writable and self.store.is_untouched(previous):
                self.store.delete_conversation(previous)
                self.conversations_changed.emit()
        except ChatStoreError:
            pass  # it stays; nothing is lost by keeping an empty chat

    def _create_conversation(self, sampling=None, system_prompt: str = "") -> int:
        conversation = self.store.create_conversation(
            model_id=self.workspace.settings.last_model_id, system_prompt=system_prompt, sampling=sampling
        )
        self.current_id = conversation.id
        return conversation.id

    def rename(self, conversation_id: int, title: str) -> bool:
        try:
            self.store.rename_conversation(conversation_id, title)
        except ChatNotFound:
            return False
        except ChatStoreError as exc:
            self.banner.emit(f"The chat could not be renamed: {exc}")
            return False
        self.conversations_changed.emit()
        return True

    def delete(self, conversation_id: int) -> bool:
        if self.streaming and self._stream_conversation == conversation_id:
            self.stop()
        try:
            self.store.delete_conversation(conversation_id)
        except ChatStoreError as exc:
            self.banner.emit(f"The chat could not be deleted: {exc}")
            return False
        for reply_id, reply in list(self._unsaved.items()):
            if self._conversation_of(reply_id) in (None, conversation_id):
                self._unsaved.pop(reply_id, None)
        if self.current_id == conversation_id:
            try:
                remaining = self.store.list_conversations()
            except ChatStoreError:
                remaining = []
            self.current_id = remaining[0].id if remaining else None
        self.conversations_changed.emit()
        self.messages_changed.emit(self.current_id or 0)
        return True

    def _conversation_of(self, message_id: int) -> int | None:
        try:
            return self.store.get_message(message_id).conversation_id
        except (ChatNotFound, ChatStoreError):
            return None

    def messages(self) -> list[StoredMessage]:
        """The current chat's messages, with replies not saved yet as they really are; may raise ChatStoreError."""
        if not self.current_id:
            return []
        messages = self.store.messages(self.current_id)
        if not self._unsaved:
            return messages
        shown = []
        for message in messages:
            unsaved = self._unsaved.get(message.id)
            if unsaved is not None:
                notice = " ".join(x for x in (unsaved.notice, UNSAVED_NOTE) if x)
                message = replace(message, content=unsaved.text, status=unsaved.status, stats=unsaved.stats,
                                  notice=notice)
            shown.append(message)
        return shown

    def show_version(self, message_id: int, step: int) -> None:
        """Flip a reply to its previous (-1) or next (+1) version; the next turn's history follows."""
        if self.streaming:
            return
        try:
            message = self.store.get_message(message_id)
            version = message.version + step
            if 1 <= version <= message.versions:
                self.store.show_version(message_id, version)
        except ChatNotFound:
            return
        except ChatStoreError as exc:
            self.banner.emit(f"That version could not be shown: {exc}")
            return
        self.messages_changed.emit(self.current_id or 0)

    # ---- the damaged-history recovery --------------------------------------

    def recover_history(self) -> bool:
        """Read what is still readable in the set-aside file into the history, on a pool thread."""
        problem: HistoryProblem | None = self.history_problem
        if problem is None or not problem.recoverable or problem.set_aside is None or self._recovery is not None:
            return False
        from engines.chat.salvage import salvage

        store = self.store

        def work():
            try:
                connection = store.another_connection()
                try:
                    return salvage(problem.set_aside, connection).summary()
                finally:
                    connection.close()
            except ChatStoreError as exc:
                return exc

        self.history_notice.emit(f"Recovering what can be read from {problem.set_aside.name}…", False)
        self._recovery = run_in_background(work, on_done=self._recovered, on_error=self._recovery_failed)
        return True

    def _recovered(self, result) -> None:
        if isinstance(result, ChatStoreError):
            self._recovery_failed(str(result))
            return
        self._recovery = None
        self.history_problem = None
        self.history_notice.emit(result, False)
        self.conversations_changed.emit()

    def _recovery_failed(self, error) -> None:
        self._recovery = None
        self.history_notice.emit(f"Recovery failed: {getattr(error, 'message', None) or error}", True)

    # ---- models ----------------------------------------------------------

    def models(self) -> list:
        """Chat models only (InstalledModel), then the remote servers' models (RemoteModel), marked remote."""
        return self.workspace.models.runnable("chat") + remote_models(self.remote_servers)

    def current_model(self) -> InstalledModel | None:
        model_id = None
        if self.current_id:
            try:
                model_id = self.store.get_conversation(self.current_id).model_id
            except (ChatNotFound, ChatStoreError):
                model_id = None
        model_id = model_id or self.workspace.settings.last_model_id
        model = self.workspace.models.get(model_id) if model_id else None
        if model is None and model_id:
            model = find_remote_model(model_id, self.remote_servers)
        if model is None or model.kind != "chat":
            models = self.models()
            model = models[0] if models else None
        return model

    def choose_model(self, model_id: str) -> None:
        self.workspace.settings.last_model_id = model_id
        self.workspace.save_settings()
        if self.current_id:
            try:
                self.store.set_conversation_model(self.current_id, model_id)
            except (ChatNotFound, ChatStoreError):
                pass  # the choice still applies (settings); the chat remembers it at its next message

    def load_spec(self, model: InstalledModel):
        if model.engine == "remote":
            return model.spec  # the server loads it with its own settings
        prefs = self.workspace.settings.prefs_for(model.id)
        return TextLoadSpec(model.path, prefs.context_length, prefs.threads, prefs.gpu_layers, prefs.cache_type,
                            projector=self.projector_for(model))

    def projector_for(self, model: InstalledModel) -> str | None:
        """The vision projector found beside a local model, loaded with it (the server finds the same one)."""
        if model.engine == "remote":
            return None
        from engines.library.probes.projector import find_projector

        found = find_projector(model.path)
        return str(found) if found else None

    def vision_problem(self, model: InstalledModel | None) -> str | None:
        """Why ``model`` cannot be shown an image, in words; None when it can."""
        if model is None:
            return "Add a vision model first: images need a model that can see them."
        if model.engine == "remote":
            return (f"{model.name} runs on a remote server: Atelier sends images only to vision models on this "
                    "computer. Send the message without the image.")
        if self.projector_for(model) is None:
            from pathlib import Path

            return (f"{model.name} cannot see images: no vision projector (an mmproj .gguf file made for it) is "
                    f"beside it in {Path(model.path).parent}. Choose a vision model, or send the message without "
                    "the image.")
        return None

    def _can_see_what_it_needs(self, model: InstalledModel, images: tuple[bytes, ...] = ()) -> bool:
        """False, with the reason in the banner, when the message or the chat holds images the model cannot see."""
        problem = self.vision_problem(model)
        if problem and images:
            self.banner.emit(problem)
            return False
        if problem and self.images_of_current():
            self.banner.emit(f"This chat holds images, and {model.name} cannot see them: choose a vision model for "
                             "this chat, or start a new chat.")
            return False
        return True

    def images_of_current(self) -> dict[int, tuple[bytes, ...]]:
        """The current chat's attached images by message id; may raise ChatStoreError."""
        return self.store.images_of(self.current_id) if self.current_id else {}

    def set_load_prefs(self, prefs) -> None:
        model = self.current_model()
        if model is not None and model.engine != "remote":
            self.workspace.settings.load_prefs[model.id] = prefs
            self.workspace.save_settings()

    def save_chat_settings(self, *, sampling=None, system_prompt: str | None = None) -> None:
        """Keep the panel's sampling or system prompt with the current chat (a new chat takes them at its first message)."""
        if not self.current_id:
            return
        try:
            if sampling is not None:
                self.store.set_sampling(self.current_id, sampling)
            if system_prompt is not None:
                self.store.set_system_prompt(self.current_id, system_prompt)
        except ChatNotFound:
            pass
        except ChatStoreError as exc:
            self.banner.emit(f"The chat's settings could not be saved: {exc}")

    def unload(self) -> None:
        if not self.streaming:
            self._unload.emit()
            self.status.emit("Model unloaded; its memory was given back.")

    # ---- sending ---------------------------------------------------------

    def send(self, text: str, sampling=None, system_prompt: str = "", images: tuple[bytes, ...] = ()) -> bool:
        """Save the user's message (and the images attached to it), then ask the worker for a reply.

        ``sampling`` and ``system_prompt`` seed a chat created by this
        message. False when nothing was sent; the caller keeps the text.
        """
        if self.streaming or not (text.strip() or images):
            return False
        model = self.current_model()
        if model is None:
            self.banner.emit("Add a model first: use “Add model file…” or drop a .gguf file onto the window.")
            return False
        if not self._can_see_what_it_needs(model, images):
            return False
        self._save_unsaved()
        try:
            if self.current_id is None:
                self._create_conversation(sampling, system_prompt)
                self.conversations_changed.emit()
            self.store.set_conversation_model(self.current_id, model.id)
            self.store.add_message(self.current_id, "user", text, images=images)
        except (ChatStoreError, ChatNotFound) as exc:
            self.banner.emit(f"Your message was not sent because it could not be saved. {exc} "
                             "It is still in the message box.")
            return False
        self.conversations_changed.emit()
        self._start_turn(model)
        return True

    def regenerate(self) -> bool:
        """A new version of the last reply; the earlier ones stay, one click away."""
        if self.streaming or not self.current_id:
            return False
        try:
            messages = self.store.messages(self.current_id)
            if not any(m.role == "user" for m in messages):
                return False
            model = self.current_model()
            if model is None or not self._can_see_what_it_needs(model):
                return False
            self._save_unsaved()
            last = messages[-1]
            regenerate_id = None
            if last.role == "assistant" and last.content.strip() and last.id not in self._unsaved:
                regenerate_id = last.id
            elif last.role == "assistant":  # an empty or unsaved failure is not worth keeping as a version
                self.store.delete_messages_from(self.current_id, last.position)
                self._unsaved.pop(last.id, None)
        except ChatStoreError as exc:
            self.banner.emit(f"The reply could not be regenerated: {exc}")
            return False
        self._start_turn(model, regenerate_id=regenerate_id)
        return True

    def last_user_message(self) -> StoredMessage | None:
        try:
            return next((m for m in reversed(self.messages()) if m.role == "user"), None)
        except ChatStoreError:
            return None

    def edit_and_resend(self, text: str) -> bool:
        last = self.last_user_message()
        if self.streaming or last is None or not text.strip():
            return False
        model = self.current_model()
        if model is None:
            return False
        self._save_unsaved()
        try:
            self.store.edit_message(last.id, text)  # the chat's title follows its first question
            self.store.delete_messages_from(self.current_id, last.position + 1)
        except (ChatStoreError, ChatNotFound) as exc:
            self.banner.emit(f"Your edit was not sent because it could not be saved. {exc} "
                             "It is still in the message box.")
            return False
        self.conversations_changed.emit()
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

    def _start_turn(self, model: InstalledModel, overflow: str | None = None, regenerate_id: int | None = None) -> None:
        policy = overflow or self.workspace.settings.overflow_policy
        if policy == "ask":
            policy = "stop"
        self.streaming = True
        self._stream_parts = []
        self._stream_conversation = self.current_id
        self.regenerating_id = regenerate_id
        self._turn_model = model
        self.banner.emit("")
        self.streaming_changed.emit(True)
        self.messages_changed.emit(self.current_id)
        self.status.emit(f"Loading {model.name}…" if self.worker.host.model_info is None else "Thinking…")
        self._run.emit(self.current_id, model, self.load_spec(model), policy, regenerate_id)

    def _on_tokens(self, conversation_id: int, text: str) -> None:
        self._stream_parts.append(text)
        self.stream_text.emit(conversation_id, "".join(self._stream_parts))

    def _on_finished(self, conversation_id: int, outcome) -> None:
        model, self._turn_model = self._turn_model, None  # the model that produced this reply (its speed: outcome.result)
        self.streaming = False
        self._stream_parts = []
        self._stream_conversation = None
        self.regenerating_id = None
        if outcome.unsaved is not None:
            self._unsaved[outcome.unsaved.reply_id] = outcome.unsaved
            self._retry.start()
        self.streaming_changed.emit(False)
        self.conversations_changed.emit()
        self.messages_changed.emit(conversation_id)
        if outcome.save_error:
            self.status.emit("")
            kept = " The reply is kept here and saved as soon as possible." if outcome.unsaved or outcome.text else ""
            self.banner.emit(f"{outcome.save_error}{kept}")
            return
        error = outcome.error
        if error is None:
            result = outcome.result
            self.status.emit("Stopped." if result is not None and result.finish_reason == "cancelled" else "")
            if model is not None and model.engine != "remote":  # a server's speed says nothing about this machine
                record_reply_speed(self.workspace, model, result)  # the Models page shows it beside the estimate
            return
        if error.kind == ErrorKind.CANCELLED:  # stopped while the model was loading: no reply, nothing wrong
            self.status.emit("Stopped.")
            return
        self.status.emit("")
        if error.kind == ErrorKind.CONTEXT_OVERFLOW and self.workspace.settings.overflow_policy == "ask":
            self.overflow_question.emit(conversation_id)
            return
        if error.kind == ErrorKind.CRASHED:
            self.banner.emit(f"{error.message} Your conversation is saved; send a message to start the engine again.")
        else:
            self.banner.emit(error.message)

    # ---- replies kept in memory ------------------------------------------

    def _save_unsaved(self) -> bool:
        """Save replies whose final write failed; True when none is left."""
        for reply_id, reply in list(self._unsaved.items()):
            if save_unsaved(self.store, reply):
                del self._unsaved[reply_id]
        if not self._unsaved:
            self._retry.stop()
        return not self._unsaved

    def _retry_unsaved(self) -> None:
        if self._save_unsaved():
            self.banner.emit("")
            self.status.emit("The reply that could not be saved is saved now.")
            self.messages_changed.emit(self.current_id or 0)

    @property
    def unsaved_replies(self) -> list[UnsavedReply]:
        return list(self._unsaved.values())

    # ---- closing -----------------------------------------------------------

    def shutdown(self) -> None:
        """Stop at once, even with an engine host that no longer answers; never close a connection in use.

        A streaming reply ends by killing the host: the worker's turn then
        saves it as interrupted and the thread stops. Should the thread still
        be busy elsewhere, its connection is left open (the process is
        ending anyway) and :attr:`worker_stopped` says so.
        """
        if self._shut_down:
            return
        self._shut_down = True
        self._retry.stop()
        if self._recovery is not None:
            self._recovery.cancel()
        if self.streaming:
            self.worker.abandon()
        self._thread.quit()
        self.worker_stopped = self._thread.wait(SHUTDOWN_WAIT_MS)
        if self.worker_stopped:
            self.worker.shutdown()
        else:
            log.warning("the chat worker did not stop; its engine host was killed and its connection left open")
            self.worker.abandon()
        if self._own_scheduler is not None:
            self._own_scheduler.shutdown()
        self._save_unsaved()
        self.store.close()
