"""The download queue: persistent jobs of one or many files, installed as one unit.

A job downloads into ``<models>/.staging/<job id>/`` and is renamed into
place only when every file is complete and verified, so the models folder
never holds half a model. The queue's state is one JSON file rewritten
atomically on every state change: after a restart, or a kill -9, a new
queue reloads it and running jobs resume from their ``.part`` files.

Threads: each running job has its own worker thread (at most
``max_parallel``). Subscribers and ``on_complete`` are called from those
threads, never under the queue's lock; a GUI must marshal to its own thread.
One queue per state file: two would overwrite each other's view of it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from engines.errors import EngineError, ErrorKind
from engines.library.download.transfer import (
    DownloadCancelled,
    FileSpec,
    check_disk_space,
    download_file,
    safe_relpath,
)
from engines.library.network import OfflineError, make_session, require_network, token_for

log = logging.getLogger(__name__)

QUEUED, RUNNING, PAUSED, FAILED, COMPLETED, CANCELLED = "queued", "running", "paused", "failed", "completed", "cancelled"
FINISHED = (FAILED, COMPLETED, CANCELLED)
STAGING = ".staging"
SPEED_WINDOW_S = 3.0
NOTIFY_EVERY_S = 0.2  # progress notifications per job; state changes are always sent

Listener = Callable[[str, "DownloadJob | None"], None]


@dataclass(frozen=True)
class DownloadJob:
    """One model to download: a single file (installed as *target*) or several (a folder)."""

    id: str
    model_id: str
    name: str
    files: tuple[FileSpec, ...]
    target: str  # relative to the models folder: the file, or the folder of a multi-file job
    state: str = QUEUED
    bytes_done: int = 0
    bytes_total: int | None = None
    speed_bps: float = 0.0
    eta_s: float | None = None
    error: str | None = None
    created_at: float = 0.0

    @property
    def is_folder(self) -> bool:
        return len(self.files) > 1

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


@dataclass
class _Run:
    """A running job's live state, owned by its worker thread."""

    cancel: threading.Event = field(default_factory=threading.Event)
    discard: bool = False  # cancelled for good: delete the partial files on exit
    done: dict[int, int] = field(default_factory=dict)
    totals: dict[int, int] = field(default_factory=dict)
    samples: deque = field(default_factory=deque)
    last_emit: float = 0.0
    thread: threading.Thread | None = None


class DownloadQueue:
    """Jobs, their worker threads and the state file.

    *transfer_options* go to :func:`download_file` (``stall_timeout``,
    ``max_attempts``, ``backoff``); tests use them to fail fast.
    """

    def __init__(
        self,
        state_file: Path,
        models_dir: Path,
        *,
        max_parallel: int = 2,
        on_complete: Callable[[DownloadJob], None] | None = None,
        session_factory=make_session,
        transfer_options: dict | None = None,
    ) -> None:
        self._file = Path(state_file)
        self._models = Path(models_dir)
        self._max_parallel = max(1, max_parallel)
        self._on_complete = on_complete
        self._session_factory = session_factory
        self._transfer_options = dict(transfer_options or {})
        self._lock = threading.RLock()
        self._jobs: dict[str, DownloadJob] = self._load()
        self._runs: dict[str, _Run] = {}
        self._listeners: list[Listener] = []
        self._started = False

    # -- public API -------------------------------------------------------------

    def jobs(self) -> list[DownloadJob]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created_at)

    def get(self, job_id: str) -> DownloadJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        """Call ``callback(job_id, job)`` on every change (job None: removed); returns an unsubscribe.

        Called from worker threads (and from the caller's thread for its
        own actions), outside the queue's lock: it may call back into the
        queue, but a GUI must hand the update over to its own thread.
        """
        with self._lock:
            self._listeners = [*self._listeners, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = [cb for cb in self._listeners if cb is not callback]

        return unsubscribe

    def add(self, model_id: str, name: str, files: Iterable[FileSpec], target: str) -> DownloadJob:
        require_network(f"downloading {name}")
        files = tuple(files)
        if not files:
            raise EngineError(ErrorKind.BAD_INPUT, f"{name} has no files to download.")
        rels = [safe_relpath(spec.relpath) for spec in files]
        if len(set(rels)) != len(rels):
            raise EngineError(ErrorKind.BAD_INPUT, f"{name} lists the same file twice.")
        path = self._models / safe_relpath(target)
        if safe_relpath(target).parts[0] == STAGING:
            raise EngineError(ErrorKind.BAD_INPUT, f"Cannot download {name} into '{target}': that folder is Atelier's own.")
        if path.exists() or path.is_symlink():
            raise EngineError(ErrorKind.BAD_INPUT, f"Cannot download {name}: '{target}' already exists in the models folder.")
        sizes = [spec.size for spec in files]
        job = DownloadJob(
            id=uuid.uuid4().hex,
            model_id=model_id,
            name=name,
            files=files,
            target=str(safe_relpath(target)),
            bytes_total=None if None in sizes else sum(sizes),
            created_at=time.time(),
        )
        with self._lock:
            if any(j.target == job.target and not j.finished for j in self._jobs.values()):
                raise EngineError(ErrorKind.BAD_INPUT, f"'{target}' is already being downloaded.")
            self._jobs[job.id] = job
            self._save()
            changed = [job, *self._pump()]
        self._emit(changed)
        return job

    def pause(self, job_id: str) -> DownloadJob:
        """Stop a queued or running job, keeping its partial files."""
        return self._change(job_id, (QUEUED, RUNNING), PAUSED, "paused", stop=True)

    def resume(self, job_id: str) -> DownloadJob:
        require_network(f"resuming {self._require(job_id).name}")
        return self._change(job_id, (PAUSED,), QUEUED, "resumed")

    def retry(self, job_id: str) -> DownloadJob:
        """Queue a failed or cancelled job again; a failed one resumes from its partial files."""
        require_network(f"retrying {self._require(job_id).name}")
        return self._change(job_id, (FAILED, CANCELLED), QUEUED, "retried")

    def cancel(self, job_id: str) -> DownloadJob:
        """Stop a job for good and delete its partial files."""
        return self._change(job_id, (QUEUED, RUNNING, PAUSED, FAILED), CANCELLED, "cancelled", stop=True, discard=True)

    def remove(self, job_id: str) -> DownloadJob:
        """Forget a finished job (and the partial files of a failed one)."""
        with self._lock:
            job = self._require(job_id)
            if not job.finished:
                raise EngineError(ErrorKind.BAD_INPUT, f"{job.name} is still {job.state}: cancel it before removing it.")
            del self._jobs[job_id]
            if job_id not in self._runs:
                shutil.rmtree(self._staging(job_id), ignore_errors=True)
            self._save()
        self._emit([], removed=job_id)
        return job

    def start(self) -> None:
        """Start running queued jobs (those reloaded from the state file too)."""
        with self._lock:
            self._started = True
            changed = self._pump()
        self._emit(changed)

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop every worker; running jobs are saved as queued and resume next start."""
        with self._lock:
            self._started = False
            runs = list(self._runs.items())
            changed = []
            for job_id, run in runs:
                run.cancel.set()
                job = self._jobs.get(job_id)
                if job is not None and job.state == RUNNING:
                    changed.append(self._set(replace(job, state=QUEUED, speed_bps=0.0, eta_s=None)))
            if changed:
                self._save()
        self._emit(changed)
        if wait:
            for _, run in runs:
                if run.thread is not None and run.thread is not threading.current_thread():
                    run.thread.join(timeout)

    # -- state ------------------------------------------------------------------

    def _require(self, job_id: str) -> DownloadJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise EngineError(ErrorKind.BAD_INPUT, f"There is no download with id {job_id}.")
        return job

    def _change(self, job_id: str, allowed: tuple[str, ...], state: str, verb: str, stop: bool = False, discard: bool = False) -> DownloadJob:
        with self._lock:
            job = self._require(job_id)
            if job.state == state:
                return job
            if job.state not in allowed:
                raise EngineError(ErrorKind.BAD_INPUT, f"{job.name} is {job.state}: it cannot be {verb}.")
            run = self._runs.get(job_id)
            if stop and run is not None:
                run.cancel.set()
                run.discard = run.discard or discard
            elif discard:
                shutil.rmtree(self._staging(job_id), ignore_errors=True)
            bytes_done = 0 if discard else job.bytes_done
            job = self._set(replace(job, state=state, error=None, speed_bps=0.0, eta_s=None, bytes_done=bytes_done))
            self._save()
            changed = [job, *self._pump()]
        self._emit(changed)
        return job

    def _set(self, job: DownloadJob) -> DownloadJob:
        self._jobs[job.id] = job
        return job

    def _pump(self) -> list[DownloadJob]:
        """Start queued jobs while fewer than max_parallel workers live (lock held)."""
        if not self._started:
            return []
        started = []
        for job in sorted(self._jobs.values(), key=lambda j: j.created_at):
            if len(self._runs) >= self._max_parallel:
                break
            if job.state != QUEUED or job.id in self._runs:  # a paused worker may still be stopping
                continue
            run = self._runs[job.id] = _Run()
            started.append(self._set(replace(job, state=RUNNING, error=None)))
            run.thread = threading.Thread(target=self._work, args=(job.id, run), name=f"download {job.name}", daemon=True)
            run.thread.start()
        if started:
            self._save()
        return started

    def _emit(self, jobs: list[DownloadJob], removed: str | None = None) -> None:
        """Tell listeners, with each job as it is *now*: threads may deliver out of order."""
        listeners = self._listeners
        with self._lock:
            events = [(job.id, self._jobs.get(job.id)) for job in jobs] + ([(removed, None)] if removed else [])
        for job_id, job in events:
            for callback in listeners:
                try:
                    callback(job_id, job)
                except Exception:  # noqa: BLE001 - a broken listener must not stop downloads
                    log.exception("download listener failed")

    # -- the worker ---------------------------------------------------------------

    def _work(self, job_id: str, run: _Run) -> None:
        job = self.get(job_id)
        outcome: tuple[str, str | None] | None = None
        session = None
        try:
            if job is None:
                raise DownloadCancelled(job_id)  # cancelled and removed before this thread ran
            staging = self._staging(job_id)
            staging.mkdir(parents=True, exist_ok=True)
            self._check_space(job, staging)
            for index, spec in enumerate(job.files):
                dest = staging / safe_relpath(spec.relpath)
                if not dest.exists():
                    session = session or self._session_factory()
                    progress = lambda done, total, i=index: self._progress(job_id, run, i, done, total)  # noqa: E731
                    options = {"token": token_for(spec.url), **self._transfer_options}
                    download_file(spec, dest, session=session, progress=progress, cancel=run.cancel, **options)
                run.done[index] = dest.stat().st_size
            job = self._install(job_id, run, staging)
            outcome = (COMPLETED, None)
        except DownloadCancelled:
            pass  # whoever set the event already set the state
        except OfflineError as exc:
            outcome = (PAUSED, exc.message)
        except EngineError as exc:
            outcome = (FAILED, exc.message)
        except Exception as exc:  # noqa: BLE001 - report, never kill the thread silently
            log.exception("download %s failed", job_id)
            outcome = (FAILED, f"The download stopped on an unexpected error: {exc}")
        finally:
            if session is not None:
                session.close()
        with self._lock:
            del self._runs[job_id]
            changed = []
            current = self._jobs.get(job_id)
            if run.discard:
                shutil.rmtree(self._staging(job_id), ignore_errors=True)
            elif current is not None and current.state == RUNNING and outcome and outcome[0] != COMPLETED:
                changed.append(self._set(replace(current, state=outcome[0], error=outcome[1], speed_bps=0.0, eta_s=None, bytes_done=sum(run.done.values()))))
            self._save()
            changed += self._pump()
        self._emit(changed)

    def _install(self, job_id: str, run: _Run, staging: Path) -> DownloadJob:
        """Rename the finished staging file or folder into place, as one step (lock held)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state != RUNNING or run.cancel.is_set():
                raise DownloadCancelled(job_id)
            target = self._models / safe_relpath(job.target)
            if target.exists() or target.is_symlink():
                raise EngineError(ErrorKind.BAD_INPUT, f"Cannot install {job.name}: '{job.target}' already exists in the models folder. The download is kept; move that away and retry.")
            target.parent.mkdir(parents=True, exist_ok=True)
            if job.is_folder:
                wanted = {staging / safe_relpath(spec.relpath) for spec in job.files}
                for path in list(staging.rglob("*")):
                    if path.is_file() and path not in wanted:
                        path.unlink()  # leftovers of an interrupted write (sidecar temp files)
                os.rename(staging, target)
            else:
                os.rename(staging / safe_relpath(job.files[0].relpath), target)
                shutil.rmtree(staging, ignore_errors=True)
            size = sum(run.done.values())
            if self._on_complete is not None:
                # Registered before the job reads "completed", so whoever sees that state
                # (a waiting CLI, the GUI) also finds the model in the library.
                try:
                    self._on_complete(job)
                except Exception:  # noqa: BLE001 - the file is installed; registering it is the caller's job
                    log.exception("on_complete failed for download %s", job_id)
            job = self._set(replace(job, state=COMPLETED, bytes_done=size, bytes_total=size, speed_bps=0.0, eta_s=0.0, error=None))
            self._save()
        self._emit([job])
        return job

    def _check_space(self, job: DownloadJob, staging: Path) -> None:
        if any(spec.size is None for spec in job.files):
            return  # unknown sizes: the write itself reports a full disk
        needed = sum(spec.size for spec in job.files) - _bytes_on_disk(job, staging)
        if needed > 0:
            check_disk_space(staging, needed)

    def _progress(self, job_id: str, run: _Run, index: int, done: int, total: int | None) -> None:
        run.done[index] = done
        if total is not None:
            run.totals[index] = total
        now = time.monotonic()
        if now - run.last_emit < NOTIFY_EVERY_S:
            return
        run.last_emit = now
        bytes_done = sum(run.done.values())
        run.samples.append((now, bytes_done))
        while len(run.samples) > 2 and now - run.samples[1][0] >= SPEED_WINDOW_S:
            run.samples.popleft()
        (t0, b0) = run.samples[0]
        speed = (bytes_done - b0) / (now - t0) if now > t0 else 0.0
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state != RUNNING:
                return
            sizes = [spec.size if spec.size is not None else run.totals.get(i) for i, spec in enumerate(job.files)]
            bytes_total = None if None in sizes else sum(sizes)
            eta = (bytes_total - bytes_done) / speed if speed > 0 and bytes_total is not None else None
            job = self._set(replace(job, bytes_done=bytes_done, bytes_total=bytes_total, speed_bps=speed, eta_s=eta))
        self._emit([job])

    # -- files ----------------------------------------------------------------------

    def _staging(self, job_id: str) -> Path:
        return self._models / STAGING / job_id

    def _load(self) -> dict[str, DownloadJob]:
        try:
            raw = json.loads(self._file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        jobs = {}
        for item in raw.get("jobs", []) if isinstance(raw, dict) else []:
            try:
                job = DownloadJob(**{**item, "files": tuple(FileSpec(**spec) for spec in item["files"])})
            except (TypeError, KeyError):
                continue
            if job.state not in (QUEUED, RUNNING, PAUSED, *FINISHED):
                continue
            if job.state == RUNNING:  # the app stopped (or was killed) mid-download
                job = replace(job, state=QUEUED)
            if not job.finished:
                job = replace(job, speed_bps=0.0, eta_s=None, bytes_done=_bytes_on_disk(job, self._staging(job.id)))
            jobs[job.id] = job
        return jobs

    def _save(self) -> None:
        """Write the state file atomically (lock held): a crash leaves the old or the new one.

        Best effort: when it cannot be written (a full disk), downloads go on
        from memory and the next state change tries again.
        """
        payload = {"version": 1, "jobs": [asdict(job) for job in sorted(self._jobs.values(), key=lambda j: j.created_at)]}
        tmp = None
        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self._file.name + ".", suffix=".tmp", dir=self._file.parent)
            with open(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._file)
        except OSError:
            log.exception("could not save the download queue to %s", self._file)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


def _bytes_on_disk(job: DownloadJob, staging: Path) -> int:
    """What a job already has in its staging folder: finished files and ``.part`` files."""
    total = 0
    for spec in job.files:
        try:
            dest = staging / safe_relpath(spec.relpath)
        except EngineError:
            continue
        for path in (dest, dest.with_name(dest.name + ".part")):
            if path.is_file():
                total += path.stat().st_size
                break
    return total
