"""One scheduler for every engine: the GUI, the CLI and the HTTP server all submit here.

It owns one engine host per loaded model (key: engine name + load spec),
loads a model on its first request and unloads it after an idle time, so
a model loaded for chat is not loaded again for the server, and a chat
model, an image model and an embedding model can be loaded together when
memory allows. Around that it keeps four promises:

- **Fair.** Each client (a page of the GUI, a CLI command, an API caller)
  has its own queue, and the next job comes from the client served
  longest ago: two clients' requests interleave, whoever submitted more.
- **Bounded.** Beyond ``max_queue`` waiting tickets :meth:`submit` raises
  :class:`QueueFull` with a retry time estimated from the jobs that ran
  (the server answers 429 with Retry-After). A host for one interactive
  client (:meth:`host_for`) is exempt: it has one request at a time.
- **Memory-aware.** Before loading, the model's fit verdict (the Models
  page's arithmetic, engines.scheduler.memory) is judged against the free
  memory; if it does not fit, idle models are unloaded, least recently
  used first, until it does; if it would fit only once busy models finish,
  it waits; if it cannot fit at all, the ticket fails with the verdict's
  sentence, before the out-of-memory killer ever acts.
- **CPU lanes.** CPU-heavy work takes lanes (engines.scheduler.lanes): on a
  small machine a chat reply and an image take turns instead of
  thrashing each other's OpenMP threads; GPU-resident and remote work
  takes none.

A cancelled or abandoned ticket stops its engine within a token or a step
(the host's per-request cancel), and a host that crashes fails only its
own ticket: the other models keep running, and the next request for the
crashed one starts a fresh process.

Locking: one re-entrant lock guards every queue and slot; decisions
(:meth:`_dispatch`) are taken under it by whichever thread changed
something. Nothing slow happens under it: hosts start, load, generate and
close on their model's own thread (engines.scheduler.slot).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from engines.api import ProgressEvent
from engines.errors import EngineError, ErrorKind
from engines.scheduler import memory
from engines.scheduler.lanes import cpu_lane_count, threads_per_lane
from engines.scheduler.slot import CRASHED, OK, ModelSlot
from engines.scheduler.state import LoadedModel, QueuedWork, SchedulerState
from engines.scheduler.work import IMAGE_ENGINES, REMOTE_ENGINE, QueueFull, Ticket, Work

log = logging.getLogger(__name__)

DEFAULT_ROLES = {"llama_cpp": "text", "documents": "documents", "diffusers": "image", "onnxruntime": "image", "esrgan": "upscale"}
CLOSING = "Atelier is closing."
CANCELLED_IN_QUEUE = "Stopped while waiting for its turn."
SHUTDOWN_GRACE_S = 2.0  # how long shutdown lets running work stop on its own before closing the hosts
DEFAULT_JOB_S = 5.0  # the retry estimate before any job has finished
TIMELINE_LENGTH = 1000


class Scheduler:
    """Queues, loads and runs work on every engine. Thread-safe; see the module docstring.

    ``resources``: a HardwareReport, or a callable returning one, for the
    free memory (default: probed now, every time a load is judged).
    ``host_factory(engine, spec, log_path, role)``: makes a model's host
    (default: an :class:`engines.host.EngineHost`, under the private image
    engine's Python for image engines when ``image_host_launch()`` names
    one, and a ``remote_host()`` for engine "remote").
    ``roles``: the log name of each engine's host
    (``engine-host-<role>.log`` in ``log_dir``). ``idle_unload_s=None``
    never unloads on a timer. ``clock``: for tests of the idle timer.
    """

    def __init__(self, log_dir: Path, *, resources=None, max_queue: int = 16, idle_unload_s: float | None = 600.0,
                 host_factory: Callable | None = None, image_host_launch: Callable[[], dict | None] | None = None,
                 remote_host: Callable[[], Any] | None = None, roles: dict[str, str] | None = None, clock: Callable[[], float] = time.monotonic,
                 cpu_lanes: int | None = None) -> None:
        self._log_dir = Path(log_dir)
        self._resources = resources
        self.max_queue = max_queue
        self.idle_unload_s = idle_unload_s
        self._host_factory = host_factory or self._default_host
        self._image_host_launch = image_host_launch
        self._remote_host = remote_host
        self._roles = {**DEFAULT_ROLES, **(roles or {})}
        self._clock = clock
        self.cpu_lanes = cpu_lanes or cpu_lane_count()
        self._lock = threading.RLock()
        self._slots: dict[tuple, ModelSlot] = {}  # stopping ones stay until their host is closed
        self._queues: dict[str, deque[Ticket]] = {}
        self._served: dict[str, int] = {}  # client -> the turn it was last served at
        self._turns = itertools.count(1)
        self._seq = itertools.count(1)
        self._lanes_busy = 0
        self._estimates: dict[tuple, memory.Estimate | None] = {}
        self._job_s: float | None = None  # a moving average of how long a job runs, for Retry-After
        self._closed = False
        self._timeline: deque[tuple[int, str, int, str, str]] = deque(maxlen=TIMELINE_LENGTH)
        self._janitor: threading.Thread | None = None
        self._janitor_stop = threading.Event()

    # ---- the public interface ------------------------------------------------

    def normalise(self, work: Work) -> Work:
        """The work as it will run: with several CPU lanes, a text host gets its share of the cores."""
        spec = work.spec
        if self.cpu_lanes > 1 and work.engine in memory.TEXT_ENGINES and getattr(spec, "threads", 0) is None:
            spec = replace(spec, threads=threads_per_lane(self.cpu_lanes))
            return Work(work.engine, spec, work.request)
        return work

    def submit(self, work: Work, client: str, *, bounded: bool = True) -> Ticket:
        """Queue ``work`` for ``client``; raises :class:`QueueFull` beyond the bound (unless ``bounded=False``)."""
        if not isinstance(work.engine, str) or not work.engine:
            raise EngineError(ErrorKind.BAD_INPUT, "The work names no engine.")
        try:
            hash(work.spec)
        except TypeError:
            raise EngineError(ErrorKind.BAD_INPUT, f"The load spec for {work.engine} cannot be used as a key "
                                                   "(it must be hashable).") from None
        work = self.normalise(work)
        self._ensure_estimate(work)
        with self._lock:
            if self._closed:
                raise EngineError(ErrorKind.UNAVAILABLE, CLOSING)
            waiting = self._waiting()
            if bounded and waiting >= self.max_queue:
                retry = self._retry_after(waiting)
                raise QueueFull(retry, f"The engine queue is full ({waiting} requests waiting); "
                                       f"try again in about {retry:.0f} s.")
            ticket = Ticket(work, client, self)
            ticket.submitted_at = self._clock()
            self._queues.setdefault(client, deque()).append(ticket)
            self._served.setdefault(client, 0)
            self._dispatch()
            if ticket.state == "queued":
                ahead = self._waiting() - 1 + sum(1 for s in self._slots.values() if s.current is not None)
                ticket._push(ProgressEvent("queue", f"Waiting for its turn: {ahead} request"
                                                    f"{'s' if ahead != 1 else ''} ahead of this one."))
            self._start_janitor()
        return ticket

    def host_for(self, client: str):
        """An EngineHost look-alike whose requests go through this scheduler as ``client``."""
        from engines.scheduler.scheduled_host import ScheduledHost

        return ScheduledHost(self, client)

    def model_info(self, key) -> Any:
        """The loaded model's info, or None when ``key`` is not loaded (or is being unloaded)."""
        with self._lock:
            slot = self._slots.get(key)
            return slot.info if slot is not None and slot.state != "stopping" else None

    def pid_of(self, key) -> int | None:
        with self._lock:
            slot = self._slots.get(key)
            return slot.pid if slot is not None else None

    def unload(self, key, wait: bool = True, timeout: float = 30.0) -> None:
        """Unload ``key`` now: work running on it is stopped, its process ends and its memory is given back.

        Tickets still queued for it load it again when their turn comes.
        """
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return
            slot.unload_requested = True
            if slot.current is None:
                slot.stop()
            else:
                self._stop_running(slot)
        if wait:
            slot.gone.wait(timeout)

    def unload_engines(self, engines, timeout: float = 30.0) -> None:
        """Unload every model of these engines (before the private image engine is replaced or removed)."""
        with self._lock:
            keys = [key for key in self._slots if key[0] in engines]
        for key in keys:
            self.unload(key, timeout=timeout)

    def kill(self, key) -> None:
        """Kill ``key``'s host at once (a window closing on a host that no longer answers)."""
        with self._lock:
            slot = self._slots.get(key)
            host = slot.host if slot is not None else None
        kill = getattr(host, "kill", None)
        if kill is not None:
            try:
                kill()
            except OSError:
                pass  # already gone

    def unload_idle(self) -> list[str]:
        """Unload every model idle for ``idle_unload_s`` or more; the names of those unloaded."""
        if self.idle_unload_s is None:
            return []
        with self._lock:
            now = self._clock()
            expired = [s for s in self._slots.values()
                       if s.state == "idle" and now - s.last_used >= self.idle_unload_s]
            for slot in expired:
                log.info("unloading %s after %.0f s idle", slot.name, now - slot.last_used)
                slot.stop()
        return [slot.name for slot in expired]

    def snapshot(self) -> SchedulerState:
        with self._lock:
            now = self._clock()
            loaded = tuple(
                LoadedModel(s.engine, s.spec, s.name, s.state, s.pid, s.estimated_bytes, s.measured_bytes,
                            s.measured_vram_bytes, 0.0 if s.current is not None else max(0.0, now - s.last_used),
                            s.gpu_resident, tuple(s.clients), s.info)
                for s in self._slots.values()
            )
            queued = sorted((t for q in self._queues.values() for t in q), key=lambda t: t.id)
            running = [s.current for s in self._slots.values() if s.current is not None]
            return SchedulerState(
                loaded=loaded,
                queued=tuple(self._describe(t, now) for t in queued),
                running=tuple(self._describe(t, now) for t in running),
                cpu_lanes=self.cpu_lanes, cpu_lanes_busy=self._lanes_busy, max_queue=self.max_queue,
            )

    def timeline(self) -> list[tuple[int, str, int, str, str]]:
        """The last starts and ends, in order: (sequence number, "start"/"end", ticket id, client, engine)."""
        with self._lock:
            return list(self._timeline)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel what waits, stop what runs, close every host. Bounded even when a host is stuck."""
        with self._lock:
            self._closed = True
            self._janitor_stop.set()
            for tickets in self._queues.values():
                for ticket in tickets:
                    ticket._finish(EngineError(ErrorKind.CANCELLED, CLOSING))
            self._queues.clear()
            slots = list(self._slots.values())
            for slot in slots:
                slot.unload_requested = True
                if slot.current is None:
                    slot.stop()
                else:
                    self._stop_running(slot)
        deadline = time.monotonic() + timeout
        for slot in slots:
            if not slot.gone.wait(max(0.0, min(SHUTDOWN_GRACE_S, deadline - time.monotonic()))):
                try:
                    slot.host.close()  # a host that did not stop: closing ends its ticket, and the thread
                except Exception:  # noqa: BLE001 - best effort at exit
                    log.exception("closing the engine host of %s", slot.name)
        for slot in slots:
            slot.gone.wait(max(0.0, deadline - time.monotonic()))

    # ---- decisions (under the lock) -----------------------------------------

    def _dispatch(self) -> None:
        """Start every ticket that can start now, clients served longest ago first."""
        if self._closed:
            return
        while True:
            picked = self._pick()
            if picked is None:
                return
            self._start(*picked)

    def _pick(self) -> tuple[Ticket, ModelSlot | None, int] | None:
        free_lanes = self.cpu_lanes - self._lanes_busy
        reserved = False  # a wider CPU job is first in line: no narrower one may take the lanes it waits for
        clients = sorted((c for c, q in self._queues.items() if q),
                         key=lambda c: (self._served.get(c, 0), self._queues[c][0].id))
        for client in clients:
            for ticket in list(self._queues[client]):
                slot = self._slots.get(ticket.work.key)
                if slot is not None and slot.state != "idle":
                    continue  # its model is busy (or going): the client's next job may use another model
                need = self._lanes_for(ticket.work, slot)
                if need and (reserved or need > free_lanes):
                    reserved = True
                    break  # this client's later jobs wait behind this one
                if slot is None:
                    room = self._room_for(ticket)
                    if room == "refused":
                        return self._pick()
                    if room == "wait":
                        break
                return ticket, slot, need
        return None

    def _lanes_for(self, work: Work, slot: ModelSlot | None) -> int:
        if work.engine == REMOTE_ENGINE or (slot is not None and slot.gpu_resident):
            return 0
        if work.engine in IMAGE_ENGINES:
            return self.cpu_lanes  # PyTorch / ONNX Runtime use every core: alone on the CPU
        return 1

    def _start(self, ticket: Ticket, slot: ModelSlot | None, need: int) -> None:
        self._queues[ticket.client].remove(ticket)
        if not self._queues[ticket.client]:
            del self._queues[ticket.client]
        if slot is None:
            try:
                slot = self._new_slot(ticket.work.key)
            except Exception as exc:  # noqa: BLE001 - e.g. an engine that cannot have a host here
                ticket._finish(exc)
                return
        slot.state = "busy" if slot.info is not None else "loading"
        slot.current = ticket
        slot.lanes = need
        if ticket.client in slot.clients:
            slot.clients.remove(ticket.client)
        slot.clients.append(ticket.client)
        self._lanes_busy += need
        self._served[ticket.client] = next(self._turns)
        ticket.state = "running"
        ticket.started_seq = next(self._seq)
        ticket.started_at = self._clock()
        self._timeline.append((ticket.started_seq, "start", ticket.id, ticket.client, ticket.work.engine))
        slot.post(ticket)

    def _new_slot(self, key) -> ModelSlot:
        engine, spec = key
        role = self._free_role(self._roles.get(engine, engine))
        host = self._host_factory(engine, spec, self._log_dir / f"engine-host-{role}.log", role)
        slot = ModelSlot(key, host, role, self, self._estimates.get(key), self._clock())
        estimate = self._estimates.get(key)
        if estimate is not None:
            slot.estimated_bytes = estimate.bytes_needed(self._report())
        self._slots[key] = slot
        slot.start()
        return slot

    def _free_role(self, role: str) -> str:
        """``role``, or ``role-2``... while another live host writes ``role``'s log (a log is one run's)."""
        taken = {s.role for s in self._slots.values()}
        if role not in taken:
            return role
        return next(f"{role}-{n}" for n in itertools.count(2) if f"{role}-{n}" not in taken)

    def _stop_running(self, slot: ModelSlot) -> None:
        ticket = slot.current
        if ticket is not None:
            ticket._cancelled.set()
            slot.host.cancel()

    def _cancel(self, ticket: Ticket) -> None:
        """Ticket.cancel(): out of the queue, or its engine told to stop (any thread)."""
        with self._lock:
            queue = self._queues.get(ticket.client)
            if queue is not None and ticket in queue:
                queue.remove(ticket)
                if not queue:
                    del self._queues[ticket.client]
                ticket._finish(EngineError(ErrorKind.CANCELLED, CANCELLED_IN_QUEUE))
                self._dispatch()
                return
            slot = self._slots.get(ticket.work.key)
            if slot is not None and slot.current is ticket:
                slot.host.cancel()

    # ---- memory (under the lock) ------------------------------------------------

    def _ensure_estimate(self, work: Work) -> None:
        """Estimate a model once, on the submitting thread (it reads the model's header)."""
        key = work.key
        with self._lock:
            if key in self._estimates:
                return
        estimate = None if work.engine == REMOTE_ENGINE else memory.estimate_for(work.engine, work.spec)
        with self._lock:
            self._estimates.setdefault(key, estimate)

    def _report(self):
        source = self._resources
        if source is None:
            return memory.current_report()
        return source() if callable(source) else source

    def _room_for(self, ticket: Ticket) -> str:
        """"go", "wait" (idle models are being unloaded, or busy ones must finish first) or "refused"."""
        estimate = self._estimates.get(ticket.work.key)
        if estimate is None:
            return "go"
        try:
            report = self._report()
        except Exception as exc:  # noqa: BLE001 - no figures: load, and let the engine's own check speak
            log.info("free memory unknown: %s", exc)
            return "go"
        loading = sum((s.estimated_bytes or 0) for s in self._slots.values()
                      if s.state == "loading" and s.measured_bytes is None)
        base = memory.with_freed(report, -loading)
        try:
            if estimate.judge(base).fits:
                return "go"
        except Exception as exc:  # noqa: BLE001 - figures the arithmetic cannot use: let the engine decide
            log.info("could not judge %s: %s", estimate.name, exc)
            return "go"
        leaving = [s for s in self._slots.values() if s.state == "stopping"]
        leaving_ram = sum(s.reclaim()[0] for s in leaving)
        leaving_vram = sum(s.reclaim()[1] for s in leaving)
        if leaving and estimate.judge(memory.with_freed(base, leaving_ram, leaving_vram)).fits:
            return "wait"  # the memory of models being unloaded is coming back
        ram, vram, chosen = leaving_ram, leaving_vram, []
        for slot in sorted((s for s in self._slots.values() if s.state == "idle"), key=lambda s: s.last_used):
            chosen.append(slot)
            freed = slot.reclaim()
            ram, vram = ram + freed[0], vram + freed[1]
            if estimate.judge(memory.with_freed(base, ram, vram)).fits:
                names = ", ".join(s.name for s in chosen)
                ticket._push(ProgressEvent("load", f"Unloading {names} to make room for {estimate.name}…"))
                for evicted in chosen:
                    log.info("unloading %s to make room for %s", evicted.name, estimate.name)
                    evicted.stop()
                return "wait"
        busy = [s for s in self._slots.values() if s.state in ("busy", "loading")]
        all_ram = ram + sum(s.reclaim()[0] for s in busy)
        all_vram = vram + sum(s.reclaim()[1] for s in busy)
        if busy and estimate.judge(memory.with_freed(base, all_ram, all_vram)).fits:
            return "wait"  # once they are idle they can be unloaded
        verdict = estimate.judge(memory.with_freed(base, ram, vram))
        message = estimate.refusal(verdict)
        if chosen or leaving:
            names = ", ".join(s.name for s in [*leaving, *chosen])
            message += f" That counts the {memory.describe(ram)} that unloading {names} would give back."
        if verdict.suggestions:
            message += " " + " ".join(verdict.suggestions)
        self._queues[ticket.client].remove(ticket)
        if not self._queues[ticket.client]:
            del self._queues[ticket.client]
        ticket._finish(EngineError(ErrorKind.MEMORY, message))
        return "refused"

    # ---- called from a model's thread ---------------------------------------------

    def _ran(self, slot: ModelSlot, ticket: Ticket, outcome: str) -> bool:
        """A ticket is over: free its lanes and the model, pick the next work. False: the slot must close."""
        with self._lock:
            self._lanes_busy -= slot.lanes
            slot.lanes = 0
            slot.current = None
            now = self._clock()
            slot.last_used = now
            ticket.ended_seq = next(self._seq)
            self._timeline.append((ticket.ended_seq, "end", ticket.id, ticket.client, ticket.work.engine))
            took = max(0.0, now - ticket.started_at)
            self._job_s = took if self._job_s is None else 0.8 * self._job_s + 0.2 * took
            keep = outcome == OK and slot.info is not None and not slot.unload_requested and not self._closed
            if keep and slot.state != "stopping":
                slot.state = "idle"
                slot.gpu_resident = self._on_gpu(slot)
            else:
                if outcome == CRASHED:
                    log.info("the engine host of %s ended during ticket %s", slot.name, ticket.id)
                slot.stop()
                keep = False
            self._dispatch()
            return keep

    def _gone(self, slot: ModelSlot) -> None:
        """The slot's host is closed: its memory is back, another load may now fit."""
        with self._lock:
            if self._slots.get(slot.key) is slot:
                del self._slots[slot.key]
            self._dispatch()

    def _on_gpu(self, slot: ModelSlot) -> bool:
        """Whether the model runs entirely on a GPU (then it takes no CPU lane)."""
        info = slot.info
        device = getattr(info, "device", None)
        if device is not None:
            return device in ("cuda", "mps")
        layers = getattr(info, "gpu_layers", 0) or 0
        total = slot.estimate.block_count if slot.estimate is not None else None
        return bool(layers) and total is not None and (layers < 0 or layers >= total)

    # ---- small helpers -------------------------------------------------------------

    def _waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _retry_after(self, waiting: int) -> float:
        running = sum(1 for s in self._slots.values() if s.current is not None)
        per_job = self._job_s if self._job_s is not None else DEFAULT_JOB_S
        return float(max(1, math.ceil(per_job * (waiting + running) / max(1, self.cpu_lanes))))

    def _describe(self, ticket: Ticket, now: float) -> QueuedWork:
        return QueuedWork(ticket.id, ticket.client, ticket.work.engine, memory.model_name(ticket.work.spec),
                          "queued" if ticket.state == "queued" else "running", max(0.0, now - ticket.submitted_at))

    def _start_janitor(self) -> None:
        if self._janitor is not None or self.idle_unload_s is None:
            return
        interval = min(30.0, max(1.0, self.idle_unload_s / 4))

        def sweep() -> None:
            while not self._janitor_stop.wait(interval):
                try:
                    self.unload_idle()
                except Exception:  # noqa: BLE001 - never let the sweeper die
                    log.exception("idle unload failed")

        self._janitor = threading.Thread(target=sweep, name="atelier-scheduler-idle", daemon=True)
        self._janitor.start()

    def _default_host(self, engine: str, spec: Any, log_path: Path, role: str):
        if engine == REMOTE_ENGINE:
            if self._remote_host is not None:
                return self._remote_host()
            from engines.remote import RemoteHost

            return RemoteHost()  # no process: the model runs on the server
        from engines.host import EngineHost

        launch = {}
        if engine in IMAGE_ENGINES and self._image_host_launch is not None:
            launch = self._image_host_launch() or {}  # the private image engine's Python, when installed
        return EngineHost(log_path, role=role, **launch)
