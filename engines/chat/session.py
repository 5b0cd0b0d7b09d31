"""One assistant reply, run end to end and saved as it streams.

This is the chat logic the GUI's worker thread drives, kept free of Qt so
it is tested without a display. The user's message is already in the
store before a turn starts; the reply row is created first and rewritten
at least every second while tokens arrive, so a crash of the engine, of
the app or of the machine loses at most a second of text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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
from engines.chat.store import ChatStore
from engines.errors import EngineError, ErrorKind

SAVE_INTERVAL_S = 1.0
_HISTORY_STATUSES = {"complete", "interrupted", "cancelled"}


@dataclass(frozen=True)
class TurnOutcome:
    reply_id: int | None
    text: str
    result: TextResult | None = None
    error: EngineError | None = None


def history_for(store: ChatStore, conversation_id: int) -> tuple[ChatMessage, ...]:
    """The messages to send: system prompt first, then every usable turn."""
    conversation = store.get_conversation(conversation_id)
    messages: list[ChatMessage] = []
    if conversation.system_prompt.strip():
        messages.append(ChatMessage("system", conversation.system_prompt))
    for stored in store.messages(conversation_id):
        if stored.role == "system" or not stored.content.strip():
            continue
        if stored.role == "assistant" and stored.status not in _HISTORY_STATUSES:
            continue
        messages.append(ChatMessage(stored.role, stored.content))
    return tuple(messages)


def stats_of(result: TextResult) -> dict:
    data = result.to_dict()
    data.pop("text", None)
    data.pop("sampling", None)
    return data


class ChatTurn:
    """Load the model if needed, generate a reply, and keep the store current."""

    def __init__(
        self,
        store: ChatStore,
        host,
        conversation_id: int,
        spec: TextLoadSpec,
        overflow: OverflowPolicy = "stop",
        engine: str = "llama_cpp",
        save_interval: float = SAVE_INTERVAL_S,
    ) -> None:
        self.store = store
        self.host = host
        self.conversation_id = conversation_id
        self.spec = spec
        self.overflow = overflow
        self.engine = engine
        self.save_interval = save_interval

    def run(self, on_event: Callable[[EngineEvent], None], prepare: Callable[[], None] | None = None) -> TurnOutcome:
        sampling = self.store.get_sampling(self.conversation_id)
        request = TextRequest(history_for(self.store, self.conversation_id), sampling, overflow=self.overflow)
        reply_id = self.store.begin_reply(self.conversation_id)
        parts: list[str] = []
        notice = None
        last_save = time.monotonic()
        try:
            if prepare is not None:
                prepare()
            self.host.load(self.engine, self.spec, on_event)
            for event in self.host.generate(request):
                if isinstance(event, TokenEvent):
                    parts.append(event.text)
                    now = time.monotonic()
                    if now - last_save >= self.save_interval:
                        self.store.update_reply(reply_id, "".join(parts))
                        last_save = now
                elif isinstance(event, NoticeEvent):
                    notice = event.message
                elif isinstance(event, FinishedEvent):
                    result = event.result
                    status = "cancelled" if result.finish_reason == "cancelled" else "complete"
                    self.store.finish_reply(reply_id, result.text, status, stats_of(result), notice)
                    on_event(event)
                    return TurnOutcome(reply_id, result.text, result)
                on_event(event)
            raise EngineError(ErrorKind.INTERNAL, "The engine ended the reply without a result.")
        except EngineError as error:
            text = "".join(parts)
            if not text and error.kind in (ErrorKind.CONTEXT_OVERFLOW, ErrorKind.BAD_INPUT):
                position = self.store.get_message(reply_id).position
                self.store.delete_messages_from(self.conversation_id, position)
                return TurnOutcome(None, "", error=error)
            status = "interrupted" if error.kind == ErrorKind.CRASHED else "error"
            self.store.finish_reply(reply_id, text, status, None, error.message)
            return TurnOutcome(reply_id, text, error=error)
        except Exception as exc:  # never leave a reply stuck in 'streaming'
            text = "".join(parts)
            self.store.finish_reply(reply_id, text, "error", None, f"Unexpected error: {exc}")
            return TurnOutcome(reply_id, text, error=EngineError(ErrorKind.INTERNAL, str(exc)))
