"""An EngineHost look-alike that runs through the scheduler.

``ChatTurn``, the GUI's chat and image workers and the CLI commands were
written against :class:`engines.host.EngineHost` (load, generate, cancel,
close, model_info). This class keeps that interface, so they switch to
the shared scheduler without changing their logic:

- ``load()`` returns at once when the model is already loaded (by this
  client or another: the chat page and the server share it); otherwise it
  queues a load-only ticket and relays its events (``stage="queue"`` while
  it waits, the engine's load progress);
- ``generate()`` queues the request and streams its ticket's events; a
  model evicted between the two is loaded again by that ticket;
- ``cancel()`` stops the ticket in hand, waiting, loading or generating;
- ``close()`` unloads the model this host loaded (its memory goes back),
  ``kill()`` kills its process.

It has one request in flight at a time, like the EngineHost it replaces,
so its tickets skip the queue bound (an interactive user is never told
to retry later because the server is busy; they wait their turn).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from engines.api import EngineEvent
from engines.errors import EngineError, ErrorKind
from engines.scheduler.work import Ticket, Work


class ScheduledHost:
    def __init__(self, scheduler, client: str) -> None:
        self._scheduler = scheduler
        self.client = client
        self._key: tuple[str, Any] | None = None
        self._ticket: Ticket | None = None

    @property
    def model_info(self) -> Any:
        """The info of the model this host loaded, while it is loaded; None otherwise."""
        key = self._key
        return self._scheduler.model_info(key) if key is not None else None

    @property
    def is_running(self) -> bool:
        return self.model_info is not None

    @property
    def pid(self) -> int | None:
        key = self._key
        return self._scheduler.pid_of(key) if key is not None else None

    def start(self) -> None:
        """Nothing to start: a model's host starts with its first load."""

    def load(self, engine: str, spec: Any, on_event: Callable[[EngineEvent], None] | None = None) -> Any:
        work = self._scheduler.normalise(Work(engine, spec))
        self._key = work.key
        info = self._scheduler.model_info(work.key)
        if info is not None:
            return info
        ticket = self._run(work)
        for event in self._events(ticket):
            if on_event is not None:
                on_event(event)
        return ticket.model_info

    def generate(self, request: Any) -> Iterator[EngineEvent]:
        key = self._key
        if key is None:
            raise EngineError(ErrorKind.BAD_INPUT, "No model is loaded.")
        ticket = self._run(Work(key[0], key[1], request))
        yield from self._events(ticket)

    def cancel(self) -> None:
        """Stop the request in hand; from any thread. Between two requests there is nothing to stop."""
        ticket = self._ticket
        if ticket is not None:
            ticket.cancel()

    def close(self) -> None:
        """Unload the model this host loaded: its process ends and gives its memory back."""
        self.cancel()
        key = self._key
        if key is not None:
            self._scheduler.unload(key)

    unload = close

    def kill(self) -> None:
        key = self._key
        if key is not None:
            self._scheduler.kill(key)

    def _run(self, work: Work) -> Ticket:
        ticket = self._scheduler.submit(work, self.client, bounded=False)
        self._ticket = ticket
        return ticket

    def _events(self, ticket: Ticket) -> Iterator[EngineEvent]:
        try:
            yield from ticket.events()
        finally:
            if self._ticket is ticket:
                self._ticket = None
