"""The Documents page's progress and summary lines, in words (kept apart: pure functions, tested alone)."""

from __future__ import annotations

from pathlib import Path

from engines.durations import format_duration

MIN_FILES_FOR_ESTIMATE = 5  # the first files' rate includes loading the model: no time left before this many


def progress_words(progress) -> str:
    """``12 of 40 files · 230 passages · about 1 min left · notes.md``."""
    parts = [f"{progress.files_done} of {progress.files_total} files", f"{progress.passages_done} passages"]
    if progress.skipped:
        parts.append(f"{progress.skipped} skipped")
    if progress.seconds_left is not None and MIN_FILES_FOR_ESTIMATE <= progress.files_done < progress.files_total:
        parts.append(f"about {format_duration(progress.seconds_left)} left")
    if progress.current and progress.files_done < progress.files_total:
        midway = progress.last is not None and progress.last.state == "partial"
        parts.append(f"{'reading' if midway else 'last read'} {Path(progress.current).name}")
    return " · ".join(parts)


def summary_words(summary) -> str:
    if summary.stopped:
        return (f"Paused: {summary.indexed} files indexed, {summary.passages} passages embedded; Index resumes "
                "where it stopped.")
    return (f"Done in {format_duration(summary.seconds)}: {summary.files_total} files, {summary.indexed} indexed, "
            f"{summary.unchanged} unchanged, {len(summary.skipped)} skipped, {summary.removed} removed; "
            f"{summary.passages} passages embedded.")
