"""What every route does the same way: find the model, queue the work, follow it to the end.

The routes only translate between an API's JSON and Atelier's requests;
this module is their one way to reach the scheduler, so queueing (429 with
``Retry-After`` when the bounded queue is full), cancellation and the
request log's token counts work the same for chat, completions,
embeddings, images and Anthropic's messages.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import anyio

from engines.api import EmbeddingResult, FinishedEvent, TextResult, TokenEvent
from engines.errors import EngineError
from engines.server.directory import ModelDirectory, ServedModel
from engines.server.errors import ApiError, from_engine_error, queue_full
from engines.server.streams import TicketStream


@dataclass
class ServerContext:
    """The parts the routes share: the scheduler (shared with the GUI when it runs there) and the models."""

    scheduler: Any  # engines.scheduler.Scheduler
    directory: ModelDirectory
    _live: set = field(default_factory=set)  # the streams of work not ended yet, for cancel_all
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def find(self, name: str, kind: str) -> ServedModel:
        """The model a request names (off the event loop: the demo's file may be written on first use)."""
        return await anyio.to_thread.run_sync(self.directory.find, name, kind)

    async def start(self, served: ServedModel, request: Any, client: str, entry=None) -> TicketStream:
        """Queue ``request`` on ``served``'s model for ``client``; 429 when the queue is full.

        ``entry`` (the request log's pending entry) gets the model now and the
        token counts when the work ends, however it ends.
        """
        from engines.scheduler import QueueFull, Work

        if entry is not None:
            entry.note(model=served.id)
        work = Work(engine=served.engine, spec=served.spec, request=request)
        try:
            ticket = await anyio.to_thread.run_sync(self.scheduler.submit, work, client)
        except QueueFull as exc:
            raise queue_full(str(exc), exc.retry_after_s) from None
        except EngineError as exc:
            raise from_engine_error(exc) from None
        note = _noting(entry) if entry is not None else None

        def on_end(result, error) -> None:
            with self._lock:
                self._live.discard(stream)
            if note is not None:
                note(result, error)

        with self._lock:
            stream = TicketStream(ticket, on_end)
            self._live.add(stream)
        return stream

    def cancel_all(self) -> None:
        """Cancel every API request still queued or running (the server is stopping)."""
        with self._lock:
            live = list(self._live)
        for stream in live:
            stream.cancel()


def client_id(request, user: str | None = None) -> str:
    """Whom the scheduler's fair queue serves in turn: the API's ``user`` field, else the client's address."""
    if user:
        return f"api:{user[:64]}"
    host = request.client.host if request.client else "?"
    return f"api:{host}"


async def first_output(stream: TicketStream, param: str | None = None) -> list:
    """The events up to the first token or the end, so that a failure before any output is a proper status.

    A model that cannot load, a prompt too long for the context or a bad
    schema fail here, before a streamed response has sent its 200.
    """
    events = []
    while True:
        try:
            event = await stream.next()
        except EngineError as exc:
            raise from_engine_error(exc, param) from None
        if event is None:
            return events
        events.append(event)
        if isinstance(event, (TokenEvent, FinishedEvent)):
            return events


async def finished_result(stream: TicketStream, param: str | None = None) -> Any:
    """The result of a ticket, every event in between ignored; a cancelled one is 503."""
    while True:
        try:
            event = await stream.next()
        except EngineError as exc:
            raise from_engine_error(exc, param) from None
        if event is None:
            break
    result = stream.result
    if result is None or getattr(result, "finish_reason", None) == "cancelled" or getattr(result, "cancelled", False):
        raise ApiError(503, "The request was cancelled before it finished (the server is stopping).",
                       "server_error", "cancelled")
    return result


def _noting(entry):
    def on_end(result, error: EngineError | None) -> None:
        if error is not None:
            entry.note(finish=f"error: {error.kind}")
        elif isinstance(result, TextResult):
            entry.note(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                       finish=result.finish_reason)
        elif isinstance(result, EmbeddingResult):
            entry.note(prompt_tokens=result.prompt_tokens, finish="stop")
        elif result is not None:  # an ImageResult
            entry.note(finish="cancelled" if getattr(result, "cancelled", False) else "stop")

    return on_end
