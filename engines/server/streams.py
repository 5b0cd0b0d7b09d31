"""From a scheduler ticket (blocking, one thread) to the event loop (async), and back when a client leaves.

``Ticket.events()`` blocks between events, so each ticket is read by its
own short-lived thread, which hands every event to the loop. The route
awaits them with :meth:`TicketStream.next`. Whenever the route stops
before the end (its client disconnected, the server stops, an error), it
calls :meth:`TicketStream.cancel`, which cancels the ticket: the engine
checks its flag at every token, so the generation ends within one.

While no response has started yet (a model loading, a prompt being read, a
whole non-streamed reply), nothing else would notice a client that goes
away: :func:`cancel_on_disconnect` watches for it and cancels the ticket.
Once a streamed response is under way, Starlette's own disconnect watch
ends the stream, and the route's ``finally`` cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from typing import Any, Callable

from engines.api import FinishedEvent
from engines.errors import EngineError, ErrorKind

log = logging.getLogger("atelier.server")
_END = object()


class TicketStream:
    """The events of one ticket, in order, as awaitables; :attr:`result` is set by the FinishedEvent.

    ``on_end(result, error)`` runs in the reader thread once the ticket is
    done, whatever ended it (the request log takes its token counts there).
    """

    def __init__(self, ticket, on_end: Callable[[Any, EngineError | None], None] | None = None) -> None:
        self._ticket = ticket
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._done = False  # the route has read the end
        self._ended = False  # the ticket has ended (set in the reader thread)
        self.result: Any = None
        threading.Thread(target=self._read, name="atelier-api-ticket", daemon=True).start()

    async def next(self):
        """The next event, or None after the FinishedEvent; raises the ticket's EngineError."""
        if self._done:
            return None
        item = await self._queue.get()
        if item is _END:
            self._done = True
            return None
        if isinstance(item, EngineError):
            self._done = True
            raise item
        if isinstance(item, FinishedEvent):
            self.result = item.result
        return item

    def cancel(self) -> None:
        """Stop the generation (any thread, any time; nothing to do once it ended)."""
        if not self._ended:
            self._ticket.cancel()

    def _read(self) -> None:
        result, error = None, None
        try:
            for event in self._ticket.events():
                if isinstance(event, FinishedEvent):
                    result = event.result
                self._deliver(event)
        except EngineError as exc:
            error = exc
        except Exception as exc:  # a bug below us: the client still gets an answer, the log the details
            log.exception("reading a scheduler ticket failed")
            error = EngineError(ErrorKind.INTERNAL, f"The engine failed unexpectedly ({type(exc).__name__}); "
                                "the details are in the server log.")
        self._ended = True
        if self._on_end is not None:  # before the route hears of the end, so its log line has the tokens
            try:
                self._on_end(result, error)
            except Exception:
                log.exception("noting the end of a request failed")
        if error is not None:
            self._deliver(error)
        self._deliver(_END)

    def _deliver(self, item) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server stopped, nobody will read this
            self._ticket.cancel()


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
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode("utf-8")


SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
