"""``<models>/.staging``: where jobs download before they are installed, and the locks that say who runs them.

Each job has a folder ``.staging/<job id>/`` (its partial and finished
files) and a lock file ``.staging/<job id>.lock``, held by the process
that runs the job for as long as it does (an OS lock: a killed process
lets go of it). Every path here comes from a job id that passed
:func:`check_job_id`, and neither ``.staging`` nor a job's folder may be a
symbolic link: deleting a job's partial files can never reach outside
Atelier's folders, whatever a state file says (defect D6).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from engines.errors import EngineError, ErrorKind
from engines.library.download.jobs import STAGING, DownloadJob, check_job_id
from engines.library.download.transfer import printable, safe_relpath
from engines.storage import held_elsewhere, try_hold

log = logging.getLogger(__name__)


class StagingArea:
    def __init__(self, models_dir: Path) -> None:
        self.root = Path(models_dir) / STAGING

    def folder(self, job_id: str) -> Path:
        """The job's staging folder: a plain name inside ``.staging``, neither of them a symbolic link."""
        path = self.root / check_job_id(job_id)
        for folder in (self.root, path):
            if folder.is_symlink():
                raise EngineError(ErrorKind.BAD_INPUT, f"{folder} is a symbolic link; Atelier only downloads into "
                                  "its own folders, so it refuses to use it.")
        return path

    def lock_file(self, job_id: str) -> Path:
        return self.root / f"{check_job_id(job_id)}.lock"

    def hold(self, job_id: str):
        """Take the job's lock (None when another process, or another queue, holds it)."""
        return try_hold(self.lock_file(job_id))

    def held_elsewhere(self, job_id: str) -> bool:
        return held_elsewhere(self.lock_file(job_id))

    def discard(self, job_id: str, *, running_here: bool, forget_lock: bool = False) -> None:
        """Delete a job's partial files, unless another process still holds the job."""
        try:
            folder = self.folder(job_id)
        except EngineError as exc:
            log.warning("not deleting the partial files of download %s: %s", printable(job_id), exc.message)
            return
        hold = None if running_here else self.hold(job_id)
        if not running_here and hold is None:
            return  # another process's worker is still letting go of it; its own cleanup decides
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            if hold is not None:
                if forget_lock:
                    self.forget_lock(job_id)
                hold.release()

    def forget_lock(self, job_id: str) -> None:
        """Remove the lock file of a job nobody will run again (by its holder, before it lets go)."""
        with contextlib.suppress(OSError, EngineError):
            self.lock_file(job_id).unlink()

    def bytes_on_disk(self, job: DownloadJob) -> int:
        """What a job already has in its staging folder: finished files and ``.part`` files."""
        try:
            folder = self.folder(job.id)
        except EngineError:
            return 0
        total = 0
        for spec in job.files:
            dest = folder / safe_relpath(spec.relpath)
            for path in (dest, dest.with_name(dest.name + ".part")):
                if path.is_file():
                    total += path.stat().st_size
                    break
        return total

    def orphans(self, known_ids: set) -> list[Path]:
        """Staging folders no job refers to: left by a lost or damaged state file (D23)."""
        if not self.root.is_dir() or self.root.is_symlink():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink() and p.name not in known_ids)


def keep_only(folder: Path, wanted: set[Path]) -> None:
    """Delete files in a staging folder that are not the job's (an interrupted write's temporary files).

    Walks without following symbolic links, and unlinks a link itself, never
    what it points to.
    """
    for parent, _dirs, names in os.walk(folder, followlinks=False):
        for name in names:
            path = Path(parent) / name
            if path not in wanted:
                path.unlink()


def folder_size(folder: Path) -> int:
    total = 0
    for parent, _dirs, names in os.walk(folder, followlinks=False):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total
