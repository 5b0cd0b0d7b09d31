"""One loaded model: its engine host and the thread that drives it.

Each model gets a thread of its own that starts the host, runs the tickets
the scheduler hands it one at a time, and closes the host when the model
is unloaded, evicted, or its process died. The thread lives exactly as
long as the host, which matters on Linux: the host asks the kernel to
kill it when the *thread* that started it ends (PR_SET_PDEATHSIG, see
engines.host.watchdog), so a host must never be started from a short-lived
request thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.scheduler import memory
from engines.scheduler.work import Ticket

log = logging.getLogger(__name__)

CANCELLED_BEFORE_START = "Stopped before it started."
_STOP = object()

# How a ticket's run left the model: still loaded ("ok"), or the slot must close.
OK, LOAD_FAILED, CRASHED, BROKEN = "ok", "load_failed", "crashed", "broken"


class ModelSlot:
    """The engine host of one (engine, spec) key. Its state is changed only under the scheduler's lock."""

    def __init__(self, key: tuple[str, Any], host, role: str, scheduler, estimate, now: float) -> None:
        self.key = key
        self.engine, self.spec = key
        self.host = host
        self.role = role
        self.name = memory.model_name(self.spec)
        self.estimate = estimate
        self.info: Any = None
        self.state = "loading"  # loading -> idle <-> busy -> stopping
        self.current: Ticket | None = None
        self.lanes = 0  # CPU lanes held by the current ticket
        self.last_used = now
        self.clients: list[str] = []
        self.measured_bytes: int | None = None
        self.measured_vram_bytes: int | None = None
        self.estimated_bytes: int | None = None
        self.gpu_resident = False
        self.unload_requested = False
        self.gone = threading.Event()  # set once the host is closed and the thread has ended
        self._scheduler = scheduler
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=f"atelier-model-{role}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def post(self, ticket: Ticket) -> None:
        self._inbox.put(ticket)

    def stop(self) -> None:
        """Close the host once the ticket in hand (if any) is over. Call under the scheduler's lock."""
        if self.state != "stopping":
            self.state = "stopping"
            self._inbox.put(_STOP)

    @property
    def pid(self) -> int | None:
        return getattr(self.host, "pid", None)

    def reclaim(self) -> tuple[int, int]:
        """RAM and VRAM this model gives back when it is unloaded: measured, else estimated."""
        ram = self.measured_bytes if self.measured_bytes is not None else (self.estimated_bytes or 0)
        return ram, self.measured_vram_bytes or 0

    # ---- the slot's own thread ----------------------------------------------

    def _serve(self) -> None:
        try:
            while True:
                item = self._inbox.get()
                if item is _STOP:
                    break
                outcome = self._run(item)
                if not self._scheduler._ran(self, item, outcome):
                    break
        finally:
            try:
                self.host.close()
            except Exception:  # noqa: BLE001 - closing is best effort; the process is gone or killed
                log.exception("closing the engine host of %s", self.name)
            self._scheduler._gone(self)
            self.gone.set()

    def _run(self, ticket: Ticket) -> str:
        """Load if needed, then run the ticket's request, handing every event over. Never raises."""
        work = ticket.work

        def relay(event) -> None:
            ticket._push(event)
            if ticket.cancelled:
                self.host.cancel()  # a cancel that came before the host had a request in flight

        try:
            if ticket.cancelled:
                raise EngineError(ErrorKind.CANCELLED, CANCELLED_BEFORE_START)
            if self.info is None:
                self.info = self.host.load(self.engine, self.spec, relay)
                self._measure()
                with self._scheduler._lock:  # loaded: the snapshot says "busy" while the first request runs
                    if self.state == "loading":
                        self.state = "busy"
            ticket.model_info = self.info
            if work.request is not None:
                if ticket.cancelled:
                    raise EngineError(ErrorKind.CANCELLED, CANCELLED_BEFORE_START)
                for event in self.host.generate(work.request):
                    relay(event)
                self._measure()
        except EngineCrashed as exc:
            ticket._finish(exc)
            return CRASHED
        except EngineError as exc:
            ticket._finish(exc)
            return OK if self.info is not None else LOAD_FAILED
        except Exception as exc:  # noqa: BLE001 - e.g. the log folder cannot be written: the consumer re-raises it
            ticket._finish(exc)
            return BROKEN  # the host may be in any state: start afresh
        ticket._finish()
        return OK

    def _measure(self) -> None:
        pid = self.pid
        rss = memory.resident_bytes(pid)
        if rss is not None:
            self.measured_bytes = max(rss, self.measured_bytes or 0)
        vram = memory.vram_bytes(pid)
        if vram is not None:
            self.measured_vram_bytes = max(vram, self.measured_vram_bytes or 0)
