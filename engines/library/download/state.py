"""``downloads.json``: the download queue's state, shared by every Atelier process on a profile.

The file is the truth; each process's queue is a cache of it. Every change
is a read-modify-write under the file's ``state_lock``, written atomically
(fsynced, a unique temporary name), so the GUI and a CLI ``models pull``
see one queue and never undo each other's changes.

Reading is defensive (defect D23): a file that is not an object with a
``jobs`` list (``{"jobs": 5}``, a torn ``{``) is set aside with a message;
a job that fails :class:`JobRecord` (an id like ``../../X``, a bad type)
is refused on its own and written back as it was; unknown fields of a
newer version are kept, and so is its ``version``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from engines.library.download.jobs import DownloadJob, JobRecord, job_to_json
from engines.storage import atomic_write_text, file_version, read_state, split_valid

VERSION = 1
WHAT = "The download list"


@dataclass
class Snapshot:
    """The file as read: valid jobs, and everything this version must write back untouched."""

    jobs: dict[str, DownloadJob] = field(default_factory=dict)
    extras: dict[str, tuple[dict, list[dict]]] = field(default_factory=dict)
    invalid: list = field(default_factory=list)  # refused records, verbatim
    reasons: list[str] = field(default_factory=list)  # why each was refused
    top: dict = field(default_factory=dict)  # other top-level keys (the version among them)
    problem: str | None = None  # the file was unreadable and set aside (or could not be)
    writable: bool = True


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def signature(self) -> tuple | None:
        """Changes whenever the file is replaced: a cheap "did anyone write?" for polling."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def read(self) -> Snapshot:
        state = read_state(self.path, WHAT, _check_shape)
        data = state.data
        valid, invalid, reasons = split_valid(data.get("jobs", []), JobRecord, "download")
        snapshot = Snapshot(invalid=invalid, reasons=reasons, problem=state.problem, writable=state.writable,
                            top={key: value for key, value in data.items() if key != "jobs"})
        for record in valid:
            snapshot.jobs[record.id] = record.to_job()
            snapshot.extras[record.id] = record.extras()
        return snapshot

    def write(self, jobs: Iterable[DownloadJob], snapshot: Snapshot) -> None:
        """Replace the file with *jobs*, plus what *snapshot* holds that this version could not read."""
        records = [job_to_json(job, snapshot.extras.get(job.id)) for job in sorted(jobs, key=lambda j: j.created_at)]
        payload = {**snapshot.top, "version": max(VERSION, file_version(snapshot.top)), "jobs": records + snapshot.invalid}
        atomic_write_text(self.path, json.dumps(payload, indent=1, ensure_ascii=False))


def _check_shape(data: dict) -> None:
    if not isinstance(data.get("jobs", []), list):
        raise ValueError(f'its "jobs" is {json.dumps(data["jobs"])[:40]}, not a list')
