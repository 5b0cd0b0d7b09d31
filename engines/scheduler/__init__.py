"""One scheduler for every engine (chat, image, embedding, remote), shared by the GUI, the CLI and the server.

See :mod:`engines.scheduler.scheduler` for what it promises (fair, bounded,
memory-aware, CPU lanes) and :mod:`engines.scheduler.scheduled_host` for
the EngineHost look-alike the existing callers use.
"""

from engines.scheduler.scheduled_host import ScheduledHost
from engines.scheduler.scheduler import Scheduler
from engines.scheduler.state import LoadedModel, QueuedWork, SchedulerState
from engines.scheduler.work import QueueFull, Ticket, Work

__all__ = ["LoadedModel", "QueueFull", "QueuedWork", "ScheduledHost", "Scheduler", "SchedulerState", "Ticket", "Work"]
