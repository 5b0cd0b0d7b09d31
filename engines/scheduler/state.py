"""A picture of the scheduler at one instant: for the Server page, /v1/models and tests.

Plain frozen dataclasses, so a snapshot can be handed to another thread
(or serialised) without holding the scheduler's lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoadedModel:
    """One model with an engine host (or an in-process engine) of its own."""

    engine: str
    spec: Any
    name: str
    state: str  # "loading", "idle", "busy" or "stopping"
    pid: int | None
    estimated_bytes: int | None  # the fit arithmetic's total, against the memory free when it was judged
    measured_bytes: int | None  # the engine host's resident set after loading (and after each request)
    measured_vram_bytes: int | None  # what the GPU driver says the host holds, where it says
    idle_s: float  # seconds since its last request ended (0 while busy)
    gpu_resident: bool  # runs on the GPU: takes no CPU lane
    clients: tuple[str, ...]  # who used it, most recent last
    info: Any = None

    @property
    def key(self) -> tuple[str, Any]:
        return (self.engine, self.spec)


@dataclass(frozen=True)
class QueuedWork:
    """A ticket that waits, or runs."""

    ticket_id: int
    client: str
    engine: str
    model: str
    state: str  # "queued" or "running"
    waiting_s: float  # since it was submitted


@dataclass(frozen=True)
class SchedulerState:
    loaded: tuple[LoadedModel, ...]
    queued: tuple[QueuedWork, ...]  # waiting, in the order they were submitted
    running: tuple[QueuedWork, ...]
    cpu_lanes: int
    cpu_lanes_busy: int
    max_queue: int
