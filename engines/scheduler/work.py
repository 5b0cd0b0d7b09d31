"""What a client asks the scheduler for, and the ticket it gets back.

A :class:`Work` names an engine, a load spec (which model, loaded how) and
a request; the scheduler answers with a :class:`Ticket`. The ticket's
:meth:`Ticket.events` is the same stream an :class:`engines.host.EngineHost`
gives (the engine's own events, a :class:`FinishedEvent` last, or an
:class:`EngineError`), preceded by a ``ProgressEvent(stage="queue")`` while
it waits. Events are produced on the scheduler's model thread and handed
over through a queue, so the consumer may be any thread, and it may stop
listening at any time: closing the iterator, or :meth:`Ticket.cancel` from
another thread (an HTTP client that went away), stops the engine within a
token or a step and frees the model for the next ticket.

A consumer that lives on an event loop takes the events with
:meth:`Ticket.deliver_to` instead: they are handed to its callbacks on the
thread that produces them, with no thread of its own blocked on the queue
(the API server streams each token with one thread hop less).
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from engines.api import EngineEvent, FinishedEvent
from engines.errors import EngineError, ErrorKind

# Engines served in this process, without an engine host or the CPU lane (engines.remote.spec.ENGINE).
REMOTE_ENGINE = "remote"
# Engines whose host runs PyTorch or ONNX Runtime: they use every core (see engines.scheduler.lanes), and run
# under the private image engine's Python when one is installed (the upscaler, "esrgan", too).
IMAGE_ENGINES = frozenset({"diffusers", "onnxruntime", "esrgan"})

_ids = itertools.count(1)


@dataclass(frozen=True)
class Work:
    """One job: ``request`` on the model that ``engine`` loads from ``spec``.

    ``spec`` must be hashable: ``(engine, spec)`` is the key of the loaded
    model, so two clients asking for the same spec share one engine host.
    ``request=None`` only loads the model (a preload, or an EngineHost-style
    ``load()``).
    """

    engine: str
    spec: Any
    request: Any = None

    @property
    def key(self) -> tuple[str, Any]:
        return (self.engine, self.spec)


class QueueFull(EngineError):
    """The queue is at its bound: try again in about ``retry_after_s`` seconds (HTTP 429 + Retry-After)."""

    def __init__(self, retry_after_s: float, message: str) -> None:
        super().__init__(ErrorKind.BUSY, message)
        self.retry_after_s = retry_after_s

    def __reduce__(self):
        return (type(self), (self.retry_after_s, self.message))


class _End:
    """Put last on a ticket's event queue: the stream is over."""


_END = _End()


@dataclass(frozen=True)
class _Raise:
    error: BaseException


class Ticket:
    """A submitted :class:`Work`: its events, its state, and a cancel that works from any thread.

    ``state`` goes ``queued`` → ``running`` → ``done``. ``model_info`` is the
    loaded model's info once it is loaded. ``started_seq`` and ``ended_seq``
    place the ticket on the scheduler's timeline (one counter for every
    start and end), which is how tests and the Server page see the order
    in which work really ran.
    """

    def __init__(self, work: Work, client: str, scheduler) -> None:
        self.id = next(_ids)
        self.work = work
        self.client = client
        self.state = "queued"
        self.model_info: Any = None
        self.started_seq: int | None = None
        self.ended_seq: int | None = None
        self.submitted_at = 0.0  # on the scheduler's clock
        self.started_at = 0.0
        self._scheduler = scheduler
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self._finished = threading.Event()  # the last event (or the error) has been handed over
        self._consumed = False
        self._sink: tuple[Callable, Callable] | None = None  # (on_event, on_end) once deliver_to() was called
        self._sink_lock = threading.Lock()  # orders the switch from the queue to the sink

    def __repr__(self) -> str:
        return f"<Ticket {self.id} {self.client} {self.work.engine} {self.state}>"

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def cancel(self) -> None:
        """Stop this work, whether it is waiting, loading or generating. Any thread; more than once is fine."""
        if self._finished.is_set() or self._cancelled.is_set():
            return
        self._cancelled.set()
        self._scheduler._cancel(self)

    def events(self) -> Iterator[EngineEvent]:
        """The events, last a FinishedEvent; raises the EngineError the work ended with.

        Only one consumer may iterate. Leaving the loop early (``break``,
        an exception, ``close()``) cancels the work.
        """
        if self._consumed:
            raise RuntimeError("a ticket's events can be read only once")
        self._consumed = True
        final_seen = False  # after the FinishedEvent there is nothing left to stop
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, _Raise):
                    raise item.error
                if isinstance(item, FinishedEvent):
                    final_seen = True
                yield item
        finally:
            if not final_seen and not self._finished.is_set():
                self.cancel()

    def deliver_to(self, on_event: Callable[[EngineEvent], None],
                   on_end: Callable[[BaseException | None], None]) -> None:
        """Hand the events to ``on_event`` and the end (None, or the error) once to ``on_end``, instead of events().

        They are called on the thread that produces the event (the model's
        thread, or a submitting one for queue progress), in order, and must
        be quick and never raise. Events that came before this call are
        handed over at once. Only one consumer: events() is then refused.
        """
        if self._consumed:
            raise RuntimeError("a ticket's events can be read only once")
        self._consumed = True
        with self._sink_lock:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                _hand(item, on_event, on_end)
            self._sink = (on_event, on_end)

    def wait(self) -> Any:
        """Read every event; return the FinishedEvent's result (None for a load-only ticket)."""
        result = None
        for event in self.events():
            if isinstance(event, FinishedEvent):
                result = event.result
        return result

    # ---- the scheduler's side --------------------------------------------

    def _push(self, event: EngineEvent) -> None:
        if not self._finished.is_set():
            self._put(event)

    def _finish(self, error: BaseException | None = None) -> None:
        """Hand over the end of the stream (or its error) exactly once."""
        if self._finished.is_set():
            return
        self._finished.set()
        self.state = "done"
        self._put(_Raise(error) if error is not None else _END)  # either one ends the stream

    def _put(self, item) -> None:
        sink = self._sink
        if sink is None:
            with self._sink_lock:
                sink = self._sink
                if sink is None:
                    self._queue.put(item)
                    return
        _hand(item, *sink)


def _hand(item, on_event: Callable, on_end: Callable) -> None:
    """One queue item to a deliver_to() consumer: an event, or the end (an error raised ends it too)."""
    if item is _END:
        on_end(None)
    elif isinstance(item, _Raise):
        on_end(item.error)
    else:
        on_event(item)
