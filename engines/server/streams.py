"""From a scheduler ticket to the event loop (async), and back when a client leaves.

The ticket hands its events over on the thread that produces them
(:meth:`Ticket.deliver_to`): each one is appended to this stream's list,
and the loop is woken only when it is not already due to look (one
``call_soon_threadsafe`` for however many tokens came meanwhile). The
route awaits them one by one with :meth:`TicketStream.next`, or all that
are waiting with :meth:`TicketStream.batch`, which lets a streamed reply
send the tokens that piled up in one write. On two cores llama.cpp uses
both, and every cycle the server spends per token is taken from decoding:
this path used to cost a thread of its own per ticket, blocked on a queue,
and one loop wake-up per token.

Whenever the route stops before the end (its client disconnected, the
server stops, an error), it calls :meth:`TicketStream.cancel`, which
cancels the ticket: the engine checks its flag at every token, so the
generation ends within one.

While no response has started yet (a model loading, a prompt being read, a
whole non-streamed reply), nothing else would notice a client that goes
away: :func:`cancel_on_disconnect` watches for it and cancels the ticket.
Once a streamed response is under way, Starlette's own disconnect watch
ends the stream, and the route's ``finally`` cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from typing import Any, Callable

import msgspec

from engines.api import FinishedEvent
from engines.errors import EngineError, ErrorKind

log = logging.getLogger("atelier.server")
_END = object()
_json = msgspec.json.Encoder()


class TicketStream:
    """The events of one ticket, in order, as awaitables; :attr:`result` is set by the FinishedEvent.

    ``on_end(result, error)`` runs once the ticket is done, whatever ended
    it (the request log takes its token counts there), on the thread that
    ended it, before the route hears of the end.
    """

    def __init__(self, ticket, on_end: Callable[[Any, EngineError | None], None] | None = None) -> None:
        self._ticket = ticket
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._items: deque = deque()  # events handed over and not read yet; an EngineError or _END last
        self._wake_due = False  # a call to _wake is scheduled on the loop
        self._waiter: asyncio.Future | None = None
        self._done = False  # the route has read the end
        self._ended = False  # the ticket has ended
        self._result: Any = None  # the FinishedEvent's, as it was handed over
        self.result: Any = None
        # Not from here: a ticket that already ended would call on_end at once, while the caller (holding its
        # lock, before it has this stream) cannot take it. The loop's next turn comes before any read.
        self._loop.call_soon(ticket.deliver_to, self._event, self._end)

    async def next(self):
        """The next event, or None after the FinishedEvent; raises the ticket's EngineError."""
        events = await self._take(1)
        return events[0] if events else None

    async def batch(self) -> list:
        """Every event waiting now (at least one), or [] after the end; raises the ticket's EngineError.

        Events before an error come first; the error is raised by the next call.
        """
        return await self._take(None)

    @property
    def model_info(self) -> Any:
        """The loaded model's info (``ModelInfo``) once the ticket loaded or found it; None before."""
        return self._ticket.model_info

    def cancel(self) -> None:
        """Stop the generation (any thread, any time; nothing to do once it ended)."""
        if not self._ended:
            self._ticket.cancel()

    async def _take(self, limit: int | None) -> list:
        while True:
            if self._done:
                return []
            taken = []
            with self._lock:
                items = self._items
                while items and (limit is None or len(taken) < limit):
                    item = items[0]
                    if item is _END or isinstance(item, EngineError):
                        if taken:
                            break  # these first; the end on the next call
                        items.popleft()
                        self._done = True
                        if item is _END:
                            return []
                        raise item
                    taken.append(items.popleft())
                if not taken:
                    self._waiter = self._loop.create_future()
            if taken:
                for event in taken:
                    if isinstance(event, FinishedEvent):
                        self.result = event.result
                return taken
            try:
                await self._waiter
            finally:
                self._waiter = None

    # ---- the producer's side (the scheduler's threads) --------------------

    def _event(self, event) -> None:
        if isinstance(event, FinishedEvent):
            self._result = event.result
        self._hand(event)

    def _end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        if error is not None and not isinstance(error, EngineError):  # a bug below us: the client still gets
            log.error("a scheduler ticket failed", exc_info=error)  # an answer, the log the details
            error = EngineError(ErrorKind.INTERNAL, f"The engine failed unexpectedly ({type(error).__name__}); "
                                "the details are in the server log.")
        self._ended = True
        if self._on_end is not None:  # before the route hears of the end, so its log line has the tokens
            try:
                self._on_end(self._result, error)
            except Exception:
                log.exception("noting the end of a request failed")
        if error is not None:
            self._hand(error)
        self._hand(_END)

    def _hand(self, item) -> None:
        with self._lock:
            if self._items and self._items[-1] is _END:
                return  # a late event after the end: nobody reads it
            self._items.append(item)
            if self._wake_due or self._waiter is None:
                return  # the loop looks before it waits again, or it is already due to
            self._wake_due = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: the server stopped, nobody will read this
            self._ticket.cancel()

    def _wake(self) -> None:
        with self._lock:
            self._wake_due = False
            waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@contextlib.asynccontextmanager
async def cancel_on_disconnect(receive, stream: TicketStream):
    """Within this block, a client that disconnects cancels ``stream``'s ticket.

    ``receive`` is the request's ASGI receive after its body was read: its
    next message is ``http.disconnect``, whenever that comes. The watch stops
    when the block ends, so that a streamed response can take over.
    """

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                stream.cancel()
                return

    task = asyncio.ensure_future(watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def sse(data: dict | str, event: str | None = None) -> bytes:
    """One server-sent event: ``event: NAME`` (Anthropic) when given, then ``data: JSON``."""
    payload = data.encode("utf-8") if isinstance(data, str) else _json.encode(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


class SseTemplate:
    """The server-sent event of one JSON object in which only one string changes, token after token.

    A streamed reply repeats the same object (id, model, time...) around
    each token's text: the bytes around it are made once, and each event is
    just the text encoded between them, the same JSON as encoding it whole.
    """

    _MARK = "\u0000atelier-text\u0000"

    def __init__(self, data: dict, event: str | None = None) -> None:
        whole = sse(data, event)
        marker = _json.encode(self._MARK)
        if whole.count(marker) != 1:
            raise ValueError("the template must hold the text marker exactly once")
        self._head, self._tail = whole.split(marker)

    @classmethod
    def marker(cls) -> str:
        """The placeholder to put where the text goes in the template's object."""
        return cls._MARK

    def event(self, text: str) -> bytes:
        return self._head + _json.encode(text) + self._tail


SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
