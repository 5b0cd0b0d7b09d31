"""Durations in words, for progress lines and summaries: "40 s", "12 min", "1.5 h".

Whole seconds below a minute and a half, whole minutes below an hour and a
half, then hours with one decimal: as precise as a time-left estimate
deserves, and short enough for a status line. Stdlib only, so any layer can
use it (the CLI's progress line and the Documents page say the same words).
"""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
