"""One assistant reply, run end to end and saved as it streams.

This is the chat logic the GUI's worker thread drives, kept free of Qt so
it is tested without a display. The user's message is already in the
store before a turn starts; the reply row is created first and rewritten
at least every second while tokens arrive, so a crash of the engine, of
the app or of the machine loses at most a second of text.

A turn always ends with a :class:`TurnOutcome`, whatever fails. When the
history cannot be written (a full disk, an I/O error, a file made
read-only), the turn stops at once and the outcome carries the reply as
an :class:`UnsavedReply`: its text stays in memory, the caller shows it
and saves it at the next chance (:func:`save_unsaved`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from engines.api import (
    ChatMessage,
    EngineEvent,
    FinishedEvent,
    NoticeEvent,
    OverflowPolicy,
    TextLoadSpec,
    TextRequest,
    TextResult,
    TokenEvent,
)
from engines.chat.errors import ChatNotFound, ChatStoreError
from engines.chat.store import ChatStore
from engines.chat.tool_log import as_messages, calls_in, save_call
from engines.errors import EngineCrashed, EngineError, ErrorKind

SAVE_INTERVAL_S = 1.0
_HISTORY_STATUSES = {"complete", "interrupted", "cancelled"}
CLOSED_NOTICE = "Atelier was closed before this reply finished."


@dataclass(frozen=True)
class UnsavedReply:
    """A reply whose final state could not be written; the caller keeps it and saves it later."""

    reply_id: int
    text: str
    status: str
    stats: dict | None
    notice: str | None


@dataclass(frozen=True)
class TurnOutcome:
    reply_id: int | None
    text: str
    result: TextResult | None = None
    error: EngineError | None = None
    save_error: str | None = None  # the history could not be written: why, in words
    unsaved: UnsavedReply | None = None  # the reply as it should be saved, when that failed


def history_for(store: ChatStore, conversation_id: int) -> tuple[ChatMessage, ...]:
    """The messages to send: system prompt first, then every usable turn (each reply as the version on show)."""
    conversation = store.get_conversation(conversation_id)
    messages: list[ChatMessage] = []
    if conversation.system_prompt.strip():
        messages.append(ChatMessage("system", conversation.system_prompt))
    images = store.images_of(conversation_id)
    calls = calls_in(store, conversation_id) if store.schema_version() >= 3 else {}
    for stored in store.messages(conversation_id):
        attached = images.get(stored.id, ()) if stored.role == "user" else ()
        if stored.role == "assistant" and stored.status not in _HISTORY_STATUSES:
            continue
        if stored.role == "assistant" and stored.id in calls:  # the reply's tool calls and results, before its text
            messages += as_messages(calls[stored.id])
        if stored.role == "system" or not (stored.content.strip() or attached):
            continue
        messages.append(ChatMessage(stored.role, stored.content, images=attached))
    return tuple(messages)


def stats_of(result: TextResult) -> dict:
    data = result.to_dict()
    data.pop("text", None)
    data.pop("sampling", None)
    return data


def save_unsaved(store: ChatStore, reply: UnsavedReply) -> bool:
    """Try again to save a reply kept in memory; True once it is saved (or its chat is gone)."""
    try:
        store.finish_reply(reply.reply_id, reply.text, reply.status, reply.stats, reply.notice)  # type: ignore[arg-type]
    except ChatNotFound:
        return True  # the chat was deleted meanwhile: nothing left to save it into
    except ChatStoreError:
        return False
    return True


class _SaveFailed(Exception):
    """The store refused the reply so far: end the turn."""


class _ChatGone(Exception):
    """The chat was deleted while its reply streamed: nothing is left to save into."""


class ChatTurn:
    """Load the model if needed, generate a reply, and keep the store current.

    ``regenerate_id`` makes the reply a new version of that message (the
    earlier versions stay). ``closing`` is set by the app when it closes
    mid-reply: a reply ended by that says so instead of blaming the engine.
    """

    def __init__(
        self,
        store: ChatStore,
        host,
        conversation_id: int,
        spec: TextLoadSpec,
        overflow: OverflowPolicy = "stop",
        engine: str = "llama_cpp",
        save_interval: float = SAVE_INTERVAL_S,
        regenerate_id: int | None = None,
        closing: threading.Event | None = None,
        tools=None,
        approvals=None,
        json_schema: dict | None = None,
        tool_choice: str = "auto",
        ground: Callable[[ChatStore, TextRequest, int], TextRequest] | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self.conversation_id = conversation_id
        self.spec = spec
        self.overflow = overflow
        self.engine = engine
        self.save_interval = save_interval
        self.regenerate_id = regenerate_id
        self.closing = closing or threading.Event()
        # A ToolSet (engines.tools.toolset) the model may call, and the Approvals that allow its calls:
        # the reply then runs the tool loop (engines.tools.loop), and each call is saved as it changes.
        self.tools = tools
        self.approvals = approvals
        self.json_schema = json_schema  # "Reply as JSON matching this schema": the engine's grammar path
        self.tool_choice = tool_choice  # "required": the reply's first step must call a tool
        # Documents: ground(store, request, reply id) returns the request with the chat's collection in its system
        # message (engines.documents.grounded_request) and keeps the reply's sources; its EngineError ends the
        # reply with that sentence, like the engine's own.
        self.ground = ground

    def run(self, on_event: Callable[[EngineEvent], None], prepare: Callable[[], None] | None = None) -> TurnOutcome:
        try:
            sampling = self.store.get_sampling(self.conversation_id)
            request = TextRequest(history_for(self.store, self.conversation_id), sampling, overflow=self.overflow,
                                  json_schema=self.json_schema)
            if self.regenerate_id is not None:
                reply_id = self.store.begin_new_version(self.regenerate_id)
            else:
                reply_id = self.store.begin_reply(self.conversation_id)
        except ChatNotFound:
            return TurnOutcome(None, "", save_error="This chat was deleted.")
        except ChatStoreError as exc:
            return TurnOutcome(None, "", save_error=str(exc))
        parts: list[str] = []
        try:
            return self._generate(reply_id, request, parts, on_event, prepare)
        except _ChatGone:
            return TurnOutcome(None, "".join(parts))
        except _SaveFailed as failed:
            reason = str(failed.__cause__)
            notice = f"Stopped here: the chat history could not be saved ({reason})"
            return self._end(reply_id, "".join(parts), "interrupted", None, notice, save_error=reason)
        except EngineError as error:
            return self._engine_failed(reply_id, "".join(parts), error)
        except Exception as exc:  # noqa: BLE001 - never leave a reply stuck in 'streaming'
            error = EngineError(ErrorKind.INTERNAL, f"Unexpected error: {exc}")
            return self._end(reply_id, "".join(parts), "error", None, error.message, error=error)

    def _generate(self, reply_id, request, parts, on_event, prepare) -> TurnOutcome:
        notice = None
        last_save = time.monotonic()
        if self.ground is not None:
            request = self.ground(self.store, request, reply_id)
        if prepare is not None:
            prepare()
        info = self.host.load(self.engine, self.spec, on_event)
        if self.tools:
            return self._generate_with_tools(reply_id, request, parts, on_event, getattr(info, "tool_format", None))
        events = self.host.generate(request)
        try:
            for event in events:
                if isinstance(event, TokenEvent):
                    parts.append(event.text)
                    now = time.monotonic()
                    if now - last_save >= self.save_interval:
                        try:
                            self.store.update_reply(reply_id, "".join(parts))
                        except ChatNotFound:
                            raise _ChatGone() from None
                        except ChatStoreError as exc:
                            raise _SaveFailed() from exc
                        last_save = now
                elif isinstance(event, NoticeEvent):
                    notice = event.message
                elif isinstance(event, FinishedEvent):
                    result = event.result
                    status = "cancelled" if result.finish_reason == "cancelled" else "complete"
                    on_event(event)
                    return self._end(reply_id, result.text, status, stats_of(result), notice, result=result)
                on_event(event)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # a turn ended early stops the engine's request and drains it
        raise EngineError(ErrorKind.INTERNAL, "The engine ended the reply without a result.")

    def _generate_with_tools(self, reply_id, request, parts, on_event, tool_format: str | None = None) -> TurnOutcome:
        """The tool loop in place of one generation; the reply's text and every call are saved as they come."""
        from engines.tools.loop import Approvals, ToolCallEvent, run_tool_turn

        version = self.store.get_message(reply_id).version
        notice, last_save = None, time.monotonic()

        def on_loop_event(event) -> None:
            nonlocal notice, last_save
            if isinstance(event, TokenEvent):
                parts.append(event.text)
                if time.monotonic() - last_save >= self.save_interval:
                    self._save(lambda: self.store.update_reply(reply_id, "".join(parts)))
                    last_save = time.monotonic()
            elif isinstance(event, NoticeEvent):
                notice = event.message
            elif isinstance(event, ToolCallEvent):
                self._save(lambda: save_call(self.store, reply_id, version, event.call))
            on_event(event)

        outcome = run_tool_turn(self.host.generate, request, self.tools, self.approvals or Approvals(), on_loop_event,
                                first_choice=self.tool_choice, tool_format=tool_format)
        if outcome.result is None:
            raise EngineError(ErrorKind.INTERNAL, "The engine ended the reply without a result.")
        result = replace(outcome.result, text=outcome.text)
        on_event(FinishedEvent(result))
        status = "cancelled" if result.finish_reason == "cancelled" else "complete"
        return self._end(reply_id, outcome.text, status, stats_of(result), notice, result=result)

    def _save(self, write: Callable[[], None]) -> None:
        try:
            write()
        except ChatNotFound:
            raise _ChatGone() from None
        except ChatStoreError as exc:
            raise _SaveFailed() from exc

    def _engine_failed(self, reply_id: int, text: str, error: EngineError) -> TurnOutcome:
        if not text and error.kind in (ErrorKind.CONTEXT_OVERFLOW, ErrorKind.BAD_INPUT):
            try:  # nothing was written: leave the chat as it was before the turn
                if self.regenerate_id is not None:
                    self.store.drop_current_version(reply_id)
                else:
                    self.store.delete_messages_from(self.conversation_id, self.store.get_message(reply_id).position)
            except ChatStoreError as exc:
                return TurnOutcome(reply_id, "", error=error, save_error=str(exc),
                                   unsaved=UnsavedReply(reply_id, "", "error", None, error.message))
            except ChatNotFound:
                pass
            return TurnOutcome(None, "", error=error)
        crashed = isinstance(error, EngineCrashed) or error.kind == ErrorKind.CRASHED
        if (crashed or error.kind == ErrorKind.CANCELLED) and self.closing.is_set():
            # The app closed on it (the scheduler stops a reply that had not started yet): not the user's Stop.
            return self._end(reply_id, text, "interrupted", None, CLOSED_NOTICE)
        if error.kind == ErrorKind.CANCELLED:  # Stop pressed while the model was loading, or the reply waited its turn
            return self._end(reply_id, text, "cancelled", None, None, error=error)
        status = "interrupted" if crashed else "error"
        return self._end(reply_id, text, status, None, error.message, error=error)

    def _end(self, reply_id: int, text: str, status: str, stats: dict | None, notice: str | None, *,
             result: TextResult | None = None, error: EngineError | None = None,
             save_error: str | None = None) -> TurnOutcome:
        """Save the reply's final state; when that fails too, hand the reply back unsaved. Never raises."""
        try:
            self.store.finish_reply(reply_id, text, status, stats, notice)  # type: ignore[arg-type]
        except ChatNotFound:
            pass  # the chat was deleted meanwhile
        except ChatStoreError as exc:
            unsaved = UnsavedReply(reply_id, text, status, stats, notice)
            return TurnOutcome(reply_id, text, result, error, save_error or str(exc), unsaved)
        return TurnOutcome(reply_id, text, result, error, save_error)
