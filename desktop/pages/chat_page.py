"""The Chat page: conversation list, message view, composer and settings panel.

Layout and wiring only; the controller holds the state and the logic.
Every slot that reads the chat history shows a failure (a damaged page, a
full disk) in the banner or in the view, never raises it out of Qt: a chat
that cannot be read says so instead of showing the previous chat's
messages under its title.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from desktop.chat.chat_documents import ChatDocuments
from desktop.chat.chat_tools import ChatTools
from desktop.chat.message_view import MessageView
from desktop.chat.render import MessageDisplay
from desktop.pages.chat_controller import ChatController
from desktop.widgets.attachments import AttachmentStrip
from desktop.widgets.chat_settings_panel import ChatSettingsPanel
from desktop.widgets.composer import Composer
from desktop.widgets.conversation_list import ConversationList
from desktop.widgets.elided_label import ElidedLabel
from desktop.widgets.history_notice import HistoryNotice
from desktop.widgets.labels import banner_label
from desktop.workers.background import run_in_background, serial_pool
from engines.api import SamplingParams
from engines.byte_sizes import format_bytes
from engines.chat.citations import sources_in
from engines.chat.errors import ChatNotFound, ChatStoreError
from engines.chat.export import calls_for_export, export_json, export_markdown, suggested_filename, write_export
from engines.errors import EngineError


def _meta_for(message) -> str:
    stats = message.stats or {}
    parts = []
    if message.role == "assistant" and stats:
        if stats.get("tokens_per_second"):
            parts.append(f"{stats['tokens_per_second']:.1f} tok/s")
        if stats.get("completion_tokens") is not None:
            parts.append(f"{stats['completion_tokens']} tokens")
        if stats.get("time_to_first_token_s") is not None:
            parts.append(f"first token {stats['time_to_first_token_s']:.2f} s")
        if stats.get("seed") is not None:
            parts.append(f"seed {stats['seed']}")
    return " · ".join(parts)


def format_stats(event) -> str:
    parts = []
    if event.tokens_per_second:
        parts.append(f"{event.tokens_per_second:.1f} tok/s")
    if event.time_to_first_token_s is not None:
        parts.append(f"first token {event.time_to_first_token_s:.2f} s")
    used = event.prompt_tokens + event.completion_tokens
    if event.context_length:
        parts.append(f"context {used:,} / {event.context_length:,} ({100 * used / event.context_length:.0f}%)")
    else:  # a remote server that does not say its context length
        parts.append(f"{event.completion_tokens:,} tokens")
    return " · ".join(parts)


def _cache_words(info) -> str:
    """The loaded model's context cache for the status tooltip: type, real size, flash attention."""
    size = f", {format_bytes(info.kv_cache_bytes)}" if info.kv_cache_bytes else ""
    flash = "; flash attention on (llama.cpp needs it for a quantized cache)" if info.flash_attention else ""
    return f"{info.cache_type}{size}{flash}"


def _shows_store_errors(method):
    """A slot whose chat-history failure goes to the banner instead of out of Qt's event loop."""
    @functools.wraps(method)
    def slot(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except ChatStoreError as exc:
            self._show_banner(str(exc))
    return slot


class ChatPage(QWidget):
    model_shown = Signal(object)  # the model the page shows as the chat's (installed, remote, or None)

    def __init__(self, controller: ChatController, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.shown_model = None  # what model_shown last said
        self._editing = False
        self._idle_status = ""
        self._import_pool = serial_pool("model-import")
        self._imports: list = []
        splitter = QSplitter(Qt.Horizontal)
        splitter.setChildrenCollapsible(False)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        self.conversations = ConversationList()
        splitter.addWidget(self.conversations)

        center = QWidget()
        center.setMinimumWidth(300)
        center_layout = QVBoxLayout(center)
        center_layout.setContentsMargins(16, 12, 16, 12)
        self.title = ElidedLabel("New chat")
        self.title.setObjectName("PageTitle")
        center_layout.addWidget(self.title)
        self.history_notice = HistoryNotice()
        center_layout.addWidget(self.history_notice)
        self.banner = banner_label()
        center_layout.addWidget(self.banner)
        self.view = MessageView()
        self.view.setObjectName("MessageView")
        center_layout.addWidget(self.view, 1)
        self.status_line = QLabel()
        self.status_line.setObjectName("StatusLine")
        self.status_line.setWordWrap(True)
        self.status_line.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)  # wraps rather than widening the page
        center_layout.addWidget(self.status_line)
        self.attachments = AttachmentStrip()
        center_layout.addWidget(self.attachments)
        self.composer = Composer()
        compose_row = QHBoxLayout()
        compose_row.addWidget(self.composer, 1)
        buttons = QVBoxLayout()
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("Primary")
        self.send_button.setToolTip("Send (Enter; Shift+Enter for a new line)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the reply (Esc); what was written so far is kept")
        self.stop_button.hide()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        compose_row.addLayout(buttons)
        center_layout.addLayout(compose_row)
        actions = QHBoxLayout()
        self.regenerate_button = QPushButton("↻  Regenerate")
        self.regenerate_button.setToolTip("Write the last reply again; the earlier versions stay (‹ › under the reply)")
        self.edit_button = QPushButton("✎  Edit last")
        self.edit_button.setToolTip("Edit your last message and send it again")
        self.cancel_edit_button = QPushButton("Cancel edit")
        self.cancel_edit_button.setToolTip("Leave your last message as it was (Esc)")
        self.cancel_edit_button.hide()
        actions.addWidget(self.regenerate_button)
        actions.addWidget(self.edit_button)
        actions.addWidget(self.cancel_edit_button)
        actions.addStretch(1)
        center_layout.addLayout(actions)
        splitter.addWidget(center)

        self.panel = ChatSettingsPanel()
        splitter.addWidget(self.panel)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([200, 720, 310])

        self.tools = ChatTools(self)  # the panel's Tools box, approvals and the calls drawn under replies
        self.documents = ChatDocuments(self)  # the panel's Documents box, grounding, the sources under replies
        self._shortcuts()
        self._wire()
        problem = controller.history_problem
        if problem is not None:
            self.history_notice.show_notice(problem.message, problem.recoverable)
        self.refresh_models()
        self.refresh_conversations(select_first=True)

    # ---- wiring ----------------------------------------------------------

    def _shortcuts(self) -> None:
        # WindowShortcut on this page: active while the page is the one shown, wherever the focus is.
        for key, slot in ((QKeySequence(Qt.Key.Key_Escape), self._escape),
                          (QKeySequence(QKeySequence.StandardKey.Find), self.focus_search)):
            QShortcut(key, self, slot, context=Qt.ShortcutContext.WindowShortcut)

    def _wire(self) -> None:
        c = self.controller
        self.composer.submitted.connect(self._submit)
        self.composer.images_dropped.connect(self.attach_files)
        self.composer.image_pasted.connect(lambda data: self.attach_image(data, "pasted image"))
        self.send_button.clicked.connect(lambda: self._submit(self.composer.toPlainText()))
        self.stop_button.clicked.connect(c.stop)
        self.regenerate_button.clicked.connect(self._regenerate)
        self.edit_button.clicked.connect(self._begin_edit)
        self.cancel_edit_button.clicked.connect(self._end_edit)
        self.conversations.new_requested.connect(self.new_chat)
        self.conversations.selected.connect(self._select)
        self.conversations.rename_requested.connect(c.rename)
        self.conversations.delete_requested.connect(c.delete)
        self.conversations.export_requested.connect(self._export)
        self.conversations.search_changed.connect(lambda _t: self.refresh_conversations())
        self.view.version_requested.connect(self._flip_version)
        self.history_notice.recover_requested.connect(c.recover_history)
        self.panel.model_changed.connect(self._model_changed)
        self.panel.add_model_requested.connect(self._add_model_file)
        self.panel.unload_requested.connect(c.unload)
        self.panel.sampling_changed.connect(lambda sampling: c.save_chat_settings(sampling=sampling))
        self.panel.system_prompt_changed.connect(lambda text: c.save_chat_settings(system_prompt=text))
        self.panel.load_prefs_changed.connect(c.set_load_prefs)
        c.conversations_changed.connect(self.refresh_conversations)
        c.messages_changed.connect(self._render_messages)
        c.stream_text.connect(self._render_stream)
        c.streaming_changed.connect(self._streaming_changed)
        c.status.connect(self._set_status)
        c.stats.connect(lambda e: self.status_line.setText(format_stats(e)))
        c.banner.connect(self._show_banner)
        c.history_notice.connect(self.history_notice.show_notice)
        c.model_info.connect(self._model_loaded)
        c.overflow_question.connect(self._ask_overflow)

    # ---- conversations ---------------------------------------------------

    @_shows_store_errors
    def refresh_conversations(self, select_first: bool = False) -> None:
        c = self.controller
        search = self.conversations.search.text()
        try:
            conversations = c.conversations(search)
        except ChatStoreError as exc:
            if not search.strip():
                raise
            conversations = c.store.list_conversations(search, titles_only=True)
            self._show_banner(f"Only chat titles were searched: {exc}")
        if select_first and c.current_id is None and conversations:
            c.current_id = conversations[0].id
        self.conversations.set_conversations(conversations, c.current_id)
        self._load_chat_settings()
        self._render_messages(c.current_id or 0)

    def new_chat(self) -> None:
        """Ctrl+N and the New chat button: an empty chat, saved with its first message."""
        self._end_edit()
        self._forget_transient_messages()
        self.controller.start_new_chat()
        self.conversations.show_current(None)
        self.composer.setFocus()

    def focus_search(self) -> None:
        self.conversations.search.setFocus()
        self.conversations.search.selectAll()

    def _escape(self) -> None:
        if self.controller.streaming:
            self.controller.stop()
        elif self._editing:
            self._end_edit()

    def _select(self, conversation_id: int) -> None:
        self._end_edit()
        self._forget_transient_messages()
        self.controller.select(conversation_id)
        self.conversations.show_current(self.controller.current_id)
        self._load_chat_settings()

    def _forget_transient_messages(self) -> None:
        """'Stopped.', 'Exported to…' and a failed action's banner belong to the chat they were about."""
        self._show_banner("")
        self._set_status("")

    @_shows_store_errors
    def _load_chat_settings(self) -> None:
        c = self.controller
        if c.current_id:
            try:
                conversation = c.conversation(c.current_id)
            except ChatNotFound:
                c.current_id = None
            else:
                self.title.setText(conversation.title)
                self.panel.set_system_prompt(conversation.system_prompt)
                self.panel.set_sampling(conversation.sampling or SamplingParams())
        if not c.current_id:
            self.title.setText("New chat")
        model = c.current_model()
        self.panel.set_models(c.models(), model.id if model else None)
        self._show_model_note(model)

    @_shows_store_errors
    def _export(self, conversation_id: int, kind: str) -> None:
        c = self.controller
        conversation = c.conversation(conversation_id)
        name = suggested_filename(conversation, kind)
        filters = "Markdown (*.md)" if kind == "md" else "JSON (*.json)"
        path, _ = QFileDialog.getSaveFileName(self, "Export chat", str(Path.home() / name), filters)
        if not path:
            return
        messages, images = c.store.messages(conversation_id), c.store.images_of(conversation_id)
        export = export_markdown if kind == "md" else export_json
        text = export(conversation, messages, images, calls_for_export(c.store, conversation_id),
                      sources_in(c.store, conversation_id))
        try:
            write_export(path, text)
        except OSError as exc:
            self._show_banner(f"Could not export the chat: {exc.strerror or exc}")
            return
        if conversation_id == c.current_id:
            self.status_line.setText(f"Exported to {path}")

    # ---- messages --------------------------------------------------------

    def _displays(self) -> list[MessageDisplay]:
        c = self.controller
        images, calls, sources = c.images_of_current(), self.tools.saved_calls(), self.documents.saved_sources()
        return [
            MessageDisplay(str(m.id), m.role, m.content, m.status, m.notice, _meta_for(m), m.version, m.versions,
                           images.get(m.id, ()), calls.get(m.id, ()), sources.get(m.id))
            for m in c.messages()
            if not (c.streaming and (m.status == "streaming" or m.id == c.regenerating_id))
        ]

    def _render_messages(self, conversation_id: int) -> None:
        c = self.controller
        if conversation_id != (c.current_id or 0):
            return
        if not c.current_id:
            self.title.setText("New chat")
            self._show_empty_chat()
            return
        try:
            self.title.setText(c.conversation(c.current_id).title)
        except ChatNotFound:
            c.current_id = None
            self._show_empty_chat()
            return
        except ChatStoreError:
            self.title.setText("This chat cannot be read")
        try:
            displays = self._displays()
        except ChatStoreError as exc:
            self.view.show_empty("This chat cannot be read", f"{exc}\nYour other chats are not affected.")
            return
        if not displays and not c.streaming:
            self._show_empty_chat()
            return
        self.view.set_messages(displays)
        if c.streaming and c._stream_conversation == conversation_id:
            self.view.update_last(MessageDisplay("streaming", "assistant", "".join(c._stream_parts), "streaming",
                                                 calls=self.tools.live_calls()))

    def _show_empty_chat(self) -> None:
        """The welcome of an empty chat names the model the picker shows now, never an earlier one."""
        model = self.controller.current_model()
        if model is not None and model.engine == "remote":  # said plainly: this chat leaves the computer
            self.view.show_empty("Start a conversation", f"You are chatting with {model.model} on the remote server "
                                 f"'{model.server.name}' ({model.server.base_url}). Your messages are sent to it.")
            return
        hint = f"You are chatting with {model.name}." if model else "Add a model to start."
        self.view.show_empty("Start a conversation", f"{hint} Everything stays on this computer.")

    def _render_stream(self, conversation_id: int, text: str) -> None:
        if conversation_id == self.controller.current_id:
            self.view.update_last(MessageDisplay("streaming", "assistant", text, "streaming",
                                                 calls=self.tools.live_calls()))

    def _flip_version(self, key: str, step: int) -> None:
        if key.isdigit():
            self.controller.show_version(int(key), step)

    def _streaming_changed(self, streaming: bool) -> None:
        self.send_button.setVisible(not streaming)
        self.stop_button.setVisible(streaming)
        self.regenerate_button.setEnabled(not streaming)
        self.edit_button.setEnabled(not streaming)
        self.panel.model_combo.setEnabled(not streaming)

    def _submit(self, text: str) -> None:
        images = () if self._editing else self.attachments.images()
        if not (text.strip() or images) or not self.tools.check_before_send():
            return
        if self._editing:
            accepted = self.controller.edit_and_resend(text)
        else:
            accepted = self.controller.send(text, self.panel.sampling(), self.panel.system_prompt.toPlainText(),
                                            images=images)
        if accepted:
            self.composer.clear()
            self.attachments.clear()
            self._end_edit(keep_text=True)

    # ---- images for a vision model ---------------------------------------

    def attach_files(self, paths: list[str]) -> None:
        """Image files dropped on the composer: each checked, then attached to the next message."""
        from engines.image_input import read_image_file

        for path in paths:
            try:
                data = read_image_file(path, f"The image {Path(path).name}")
            except EngineError as exc:
                self._show_banner(f"{exc.message} The image was not attached.")
                return
            if not self.attach_image(data, Path(path).name):
                return

    def attach_image(self, data: bytes, name: str) -> bool:
        """Attach checked image bytes, or say in the banner why the current model cannot take them."""
        from engines.api import MAX_IMAGES_PER_REQUEST
        from engines.image_input import check_image

        problem = self.controller.vision_problem(self.controller.current_model())
        if problem is None and len(self.attachments.images()) >= MAX_IMAGES_PER_REQUEST:
            problem = f"At most {MAX_IMAGES_PER_REQUEST} images go with one message."
        if problem is None:
            try:
                check_image(data, f"The {name}" if name == "pasted image" else f"The image {name}")
            except EngineError as exc:
                problem = f"{exc.message} The image was not attached."
        if problem:
            self._show_banner(problem)
            return False
        self._show_banner("")
        self.attachments.add(data, name)
        return True

    def _regenerate(self) -> None:
        self._end_edit()
        self.controller.regenerate()

    def _begin_edit(self) -> None:
        last = self.controller.last_user_message()
        if last is None or self.controller.streaming:
            return
        self._editing = True
        self.composer.setPlainText(last.content)
        self.composer.setFocus()
        self.cancel_edit_button.show()
        self.send_button.setText("Resend")

    def _end_edit(self, keep_text: bool = False) -> None:
        if self._editing and not keep_text:
            self.composer.clear()
        self._editing = False
        self.cancel_edit_button.hide()
        self.send_button.setText("Send")

    def _show_banner(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    def _ask_overflow(self, conversation_id: int) -> None:
        box = QMessageBox(self)
        box.setWindowTitle("The conversation no longer fits")
        box.setText("This conversation is longer than the model's context window.")
        box.setInformativeText(
            "Drop the oldest turns for this reply (the system prompt and your last message are kept), "
            "or stop here. You can also load the model with a longer context in the panel on the right."
        )
        drop = box.addButton("Drop oldest turns", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Stop", QMessageBox.ButtonRole.RejectRole)
        box.exec()
        self.controller.resolve_overflow(box.clickedButton() is drop)

    # ---- settings --------------------------------------------------------

    def refresh_models(self) -> None:
        model = self.controller.current_model()
        self.panel.set_models(self.controller.models(), model.id if model else None)
        if model is not None:
            self.panel.set_load_prefs(self.controller.workspace.settings.prefs_for(model.id))
        self._show_model_note(model)

    def _show_model_note(self, model) -> None:
        if model is None:
            self.panel.set_model_note("No models yet. Add a .gguf file, or drop one onto the window.")
        else:
            size = format_bytes(model.size_bytes) if model.size_bytes else ""
            sees = "reads images (drop one on the message box)" if self.controller.projector_for(model) else ""
            self.panel.set_model_note(" · ".join(x for x in (model.description, size, sees) if x))
        self.panel.set_remote_model(model is not None and model.engine == "remote")
        self.shown_model = model
        self.model_shown.emit(model)  # the sidebar's privacy badge and the Server page's examples follow

    def _model_changed(self, model_id: str) -> None:
        self.controller.choose_model(model_id)
        self.refresh_models()
        self._render_messages(self.controller.current_id or 0)

    def _model_loaded(self, info) -> None:
        self.panel.set_gpu_offload(info.gpu_offload_supported)
        if info.template_source == "remote":  # engines.remote: the server runs the model and its chat format
            context = f" · {info.context_length:,}-token context" if info.context_length else ""
            self._idle_status = f"{info.name} · on {info.path}{context}"
            self.status_line.setToolTip("This model runs on a remote server, with the server's own chat format "
                                        "and load settings; what you send goes to it.")
            if not self.controller.streaming:
                self.status_line.setText(self._idle_status)
            return
        origin = "the model's own" if info.template_source == "gguf" else "picked by architecture: the file has none"
        self._idle_status = (f"{info.name} · {info.template} format · {info.context_length:,}-token context "
                             f"({info.cache_type} cache) · {info.threads} threads")
        self.status_line.setToolTip(
            f"Chat format: {info.template} ({origin}). GPU offload: "
            + ("available" if info.gpu_offload_supported else "not available in this llama.cpp build")
            + f". Context cache: {_cache_words(info)}."
        )
        if not self.controller.streaming:
            self.status_line.setText(self._idle_status)

    def _set_status(self, text: str) -> None:
        self.status_line.setText(text or self._idle_status)

    def _add_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a GGUF model", str(Path.home()), "GGUF models (*.gguf);;All files (*)")
        if path:
            self.import_model(path)

    def import_model(self, path: str) -> None:
        """Add a model file on a pool thread: reading it (a FIFO, a slow disk) never freezes the window."""
        from engines.library.importer import import_model

        models = self.controller.workspace.models
        self._show_banner("")
        self.status_line.setText(f"Adding {Path(path).name}…")
        task = run_in_background(lambda: import_model(path, models), on_done=self._model_added,
                                 on_error=self._import_failed, pool=self._import_pool)
        self._imports = [t for t in self._imports if not t.finished] + [task]

    def _model_added(self, model) -> None:
        if model.kind != "chat":  # recorded for the page that runs it, not offered here
            from engines.library.resolve import KIND_WORDS

            self._set_status("")
            self._show_banner(f"Added {model.name}: it is {KIND_WORDS.get(model.kind, model.kind)}, "
                              "not a chat model, so this list does not offer it.")
            return
        self.controller.choose_model(model.id)
        self.refresh_models()
        self._render_messages(self.controller.current_id or 0)
        self.status_line.setText(f"Added {model.name}.")

    def _import_failed(self, error) -> None:
        self._set_status("")
        message = error.message if isinstance(error, EngineError) else str(error)
        self._show_banner(f"Could not add that model: {message}")

    def shutdown(self) -> None:
        """Forget imports still running (their files are read to the end on their thread)."""
        for task in self._imports:
            task.cancel()
