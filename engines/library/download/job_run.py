"""What this process holds for a download job it runs: the worker's live state and the job's lock."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass
class JobRun:
    """A job this process runs: its worker's live state, and the job's lock."""

    hold: object  # the held lock file (released when the worker is done)
    cancel: threading.Event = field(default_factory=threading.Event)
    discard: bool = False  # cancelled for good: delete the partial files on exit
    done: dict[int, int] = field(default_factory=dict)
    totals: dict[int, int] = field(default_factory=dict)
    samples: deque = field(default_factory=deque)
    last_emit: float = 0.0
    thread: threading.Thread | None = None
