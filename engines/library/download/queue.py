"""The download queue: persistent jobs of one or many files, installed as one unit, shared by processes.

A job downloads into ``<models>/.staging/<job id>/`` and is renamed into
place only when every file is complete, verified and found to be the model
it claims to be, so the models folder never holds half a model or a web
page. After a restart, or a kill -9, a new queue reloads the state file and
running jobs resume from their ``.part`` files.

Several processes share one queue (the GUI, a ``models pull`` in a
terminal). ``downloads.json`` is the truth (see :mod:`.state`); each
change is a read-modify-write under its lock. A process runs a job only
while it holds the job's lock file (``.staging/<id>.lock``, an OS lock
released even by kill -9), and records itself as the job's ``owner``:

- the others show that job, follow its progress from the state file (a
  poller thread re-reads it when it changes) and never take it over; a
  second ``pull`` of the same model follows it to the end (defect D5);
- a "running" job whose lock is free lost its process: it is queued again
  and resumes from its partial files.

Threads: each running job has its own worker thread; at most
``max_parallel`` jobs run at once across all processes. Subscribers and
``on_complete`` are called from worker or poller threads, never under the
queue's lock; a GUI must marshal to its own thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

from engines.byte_sizes import format_bytes
from engines.errors import EngineError, ErrorKind
from engines.library.download.jobs import (
    CANCELLED,
    COMPLETED,
    FAILED,
    FINISHED,
    PAUSED,
    QUEUED,
    RUNNING,
    STAGING,
    DownloadJob,
    check_target,
)
from engines.library.download.job_run import JobRun
from engines.library.download.staging import StagingArea, folder_size, keep_only
from engines.library.download.state import Snapshot, StateFile
from engines.library.download.transfer import (
    DownloadCancelled,
    FileSpec,
    check_disk_space,
    download_file,
    printable,
    safe_relpath,
)
from engines.library.download.verify import DownloadRejected, check_download
from engines.network import OfflineError, make_session, require_network, token_for
from engines.storage import LockTimeout, state_lock

log = logging.getLogger(__name__)

__all__ = ["CANCELLED", "COMPLETED", "FAILED", "FINISHED", "PAUSED", "QUEUED", "RUNNING", "STAGING",
           "DownloadJob", "DownloadQueue"]

SPEED_WINDOW_S = 3.0
NOTIFY_EVERY_S = 0.2  # progress notifications per job; state changes are always sent
POLL_S = 0.5  # how often a started queue saves its progress and looks for other processes' changes

Listener = Callable[[str, "DownloadJob | None"], None]
Check = Callable[[DownloadJob, Path], None]


class DownloadQueue:
    """Jobs, this process's worker threads, and the shared state file.

    *transfer_options* go to :func:`download_file` (``stall_timeout``,
    ``max_attempts``, ``backoff``); tests use them to fail fast. *check*
    judges each finished download before it is installed (None: no check).
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
        check: Check | None = check_download,
    ) -> None:
        self._state = StateFile(Path(state_file))
        self._models = Path(models_dir)
        self._staging = StagingArea(self._models)
        self._max_parallel = max(1, max_parallel)
        self._on_complete = on_complete
        self._session_factory = session_factory
        self._transfer_options = dict(transfer_options or {})
        self._check = check
        self._token = f"{os.getpid()}:{secrets.token_hex(6)}"
        self._lock = threading.RLock()
        self._jobs: dict[str, DownloadJob] = {}
        self._snapshot = Snapshot()
        self._dirty: set[str] = set()  # changed here, not yet in the file
        self._removed: set[str] = set()  # removed here, not yet from the file
        self._seen: tuple | None = None  # the file's signature when last read or written
        self._runs: dict[str, JobRun] = {}
        self._listeners: list[Listener] = []
        self._started = False
        self._set_aside: str | None = None
        self._stop_polling = threading.Event()
        self._poller: threading.Thread | None = None
        with self._lock, self._shared(strict=False) as shared:
            if shared:
                self._refresh(initial=True)
                self._save()
            self._orphans = self._staging.orphans(self._known_ids())

    # -- public API -------------------------------------------------------------

    def jobs(self) -> list[DownloadJob]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created_at)

    def get(self, job_id: str) -> DownloadJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def runs_elsewhere(self, job_id: str) -> bool:
        """Whether another process runs this job (this one shows and follows it, and must not touch it)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job is not None and job.state == RUNNING and job_id not in self._runs

    @property
    def problems(self) -> list[str]:
        """What is wrong with the state file or the staging folder, for the GUI and the CLI to show."""
        with self._lock:
            problems = [self._set_aside] if self._set_aside else []
            reasons = self._snapshot.reasons
            if reasons:
                problems.append(
                    f"{_count(len(reasons), 'download')} in {self._state.path.name} {_were(len(reasons))} refused "
                    f"and not run (kept in the file as {'it is' if len(reasons) == 1 else 'they are'}): {'; '.join(reasons[:3])}{' …' if len(reasons) > 3 else ''}.")
            orphans = [path for path in self._orphans if path.exists()]
            if orphans:
                size = sum(folder_size(path) for path in orphans)
                problems.append(
                    f"{_count(len(orphans), 'partial download')} ({format_bytes(size)}) in {orphans[0].parent} "
                    f"{'belongs' if len(orphans) == 1 else 'belong'} to no download in the list: {', '.join(printable(p.name) for p in orphans[:3])}"
                    f"{' …' if len(orphans) > 3 else ''}. They are kept; delete them to free the space.")
            return problems

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        """Call ``callback(job_id, job)`` on every change (job None: removed); returns an unsubscribe.

        Called from worker and poller threads (and from the caller's thread
        for its own actions), outside the queue's lock: it may call back into
        the queue, but a GUI must hand the update over to its own thread.
        """
        with self._lock:
            self._listeners = [*self._listeners, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = [cb for cb in self._listeners if cb is not callback]

        return unsubscribe

    def add(self, model_id: str, name: str, files: Iterable[FileSpec], target: str, *, follow: bool = False) -> DownloadJob:
        """Queue a new job; with *follow*, an unfinished job for the same target is returned instead."""
        require_network(f"downloading {name}")
        files = tuple(files)
        if not files:
            raise EngineError(ErrorKind.BAD_INPUT, f"{name} has no files to download.")
        rels = [safe_relpath(spec.relpath) for spec in files]
        if len(set(rels)) != len(rels):
            raise EngineError(ErrorKind.BAD_INPUT, f"{name} lists the same file twice.")
        target = check_target(target)
        path = self._models / target
        if path.exists() or path.is_symlink():
            raise EngineError(ErrorKind.BAD_INPUT, f"Cannot download {name}: '{target}' already exists in the models folder.")
        sizes = [spec.size for spec in files]
        job = DownloadJob(
            id=uuid.uuid4().hex,
            model_id=model_id,
            name=name,
            files=files,
            target=target,
            bytes_total=None if None in sizes else sum(sizes),
            created_at=time.time(),
        )
        with self._transaction() as changed:
            existing = next((j for j in self._jobs.values() if j.target == job.target and not j.finished), None)
            if existing is not None:
                if follow:
                    return existing
                raise EngineError(ErrorKind.BAD_INPUT, f"'{target}' is already being downloaded.")
            self._put(job)
            changed.append(job.id)
        return self.get(job.id) or job

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
        with self._transaction() as changed:
            job = self._require(job_id)
            if not job.finished:
                raise EngineError(ErrorKind.BAD_INPUT, f"{job.name} is still {job.state}: cancel it before removing it.")
            del self._jobs[job_id]
            self._dirty.discard(job_id)
            self._removed.add(job_id)
            if job_id not in self._runs:
                self._staging.discard(job_id, running_here=False, forget_lock=True)
            changed.append(job_id)
        return job

    def start(self) -> None:
        """Run queued jobs (those reloaded from the state file too), and follow other processes' changes."""
        with self._transaction(strict=False):
            self._started = True
        with self._lock:
            if self._poller is None:
                self._stop_polling.clear()
                self._poller = threading.Thread(target=self._poll, name="download-queue poller", daemon=True)
                self._poller.start()

    def sync(self) -> None:
        """Share this process's progress, and catch up with other processes' changes and jobs whose process died.

        The poller calls it every ``POLL_S``; it reads the state file only when
        it changed or something may need it, and writes only what changed here.
        """
        with self._lock:
            moved = self._latest_progress()
            quiet = (
                not self._dirty
                and self._state.signature() == self._seen
                and not (self._started and any(j.state == QUEUED for j in self._jobs.values()))
                and not any(j.state == RUNNING and j.id not in self._runs for j in self._jobs.values())
            )
        if not quiet:
            with self._transaction(strict=False) as changed:
                changed += moved
        elif moved:
            self._emit(moved)

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop every worker; running jobs are saved as queued and resume next start."""
        self._stop_polling.set()
        poller, self._poller = self._poller, None
        with self._transaction(strict=False) as changed:
            self._started = False
            runs = list(self._runs.items())
            for job_id, run in runs:
                run.cancel.set()
                job = self._jobs.get(job_id)
                if job is not None and job.state == RUNNING:
                    self._put(replace(job, state=QUEUED, owner=None, speed_bps=0.0, eta_s=None))
                    changed.append(job_id)
        if wait:
            for _, run in runs:
                if run.thread is not None and run.thread is not threading.current_thread():
                    run.thread.join(timeout)
            if poller is not None and poller is not threading.current_thread():
                poller.join(timeout)

    # -- state --------------------------------------------------------------------

    @contextlib.contextmanager
    def _shared(self, strict: bool = True) -> Iterator[bool]:
        """Hold the state file's lock; yields False when it could not be had and *strict* is off."""
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(state_lock(self._state.path))
        except LockTimeout as exc:
            if strict:
                raise EngineError(ErrorKind.BUSY, str(exc)) from None
            log.info("download queue: %s", exc)
            yield False
            return
        with stack:
            yield True

    @contextlib.contextmanager
    def _transaction(self, strict: bool = True) -> Iterator[list[str]]:
        """One change: catch up with the file, change, start what may start, save; then tell listeners.

        Yields the list of changed job ids to add to. Without the file's lock
        (non-strict callers: workers, the poller) the change is made in
        memory and saved by the next transaction that gets it.
        """
        changed: list[str] = []
        with self._lock:
            with self._shared(strict) as shared:
                if shared:
                    changed += self._refresh()
                yield changed
                changed += self._pump()
                if shared:
                    self._save()
        self._emit(changed)

    def _refresh(self, initial: bool = False) -> list[str]:
        """Take the file's view of every job this process is not changing; find jobs whose process died."""
        snapshot = self._state.read()
        self._snapshot = snapshot
        self._seen = self._state.signature()
        if snapshot.problem:
            self._set_aside = snapshot.problem
            self._dirty |= set(self._jobs)  # the file was damaged: what this process knows is written back
        jobs: dict[str, DownloadJob] = {}
        for job_id, job in snapshot.jobs.items():
            if job_id in self._removed:
                continue
            if (job_id in self._runs or job_id in self._dirty) and job_id in self._jobs:
                jobs[job_id] = self._jobs[job_id]
                continue
            orphaned = job.state == RUNNING and job_id not in self._runs and not self._staging.held_elsewhere(job_id)
            if orphaned:
                log.info("download %s: its process is gone; queued again", job_id)
                job = replace(job, state=QUEUED, owner=None, speed_bps=0.0, eta_s=None)
                self._dirty.add(job_id)
            if (initial or orphaned) and not job.finished and job.state != RUNNING:
                job = replace(job, speed_bps=0.0, eta_s=None, bytes_done=self._staging.bytes_on_disk(job))
            jobs[job_id] = job
        for job_id in (self._runs.keys() | self._dirty) - jobs.keys():
            if job_id in self._jobs:
                jobs[job_id] = self._jobs[job_id]
        changed = [job_id for job_id, job in jobs.items() if self._jobs.get(job_id) != job]
        changed += [job_id for job_id in self._jobs if job_id not in jobs]
        self._jobs = jobs
        return changed

    def _save(self) -> None:
        """Write the state file if this process changed something (lock held).

        Best effort: when it cannot be written (a full disk), downloads go on
        from memory and the next change tries again. Logged without a
        traceback: a CLI without logging set up would print it (D12).
        """
        if not (self._dirty or self._removed):
            return
        if not self._snapshot.writable:
            return  # the damaged file is still in place: writing would destroy it
        try:
            self._state.write(self._jobs.values(), self._snapshot)
        except OSError as exc:
            log.info("could not save the download queue to %s: %s", self._state.path, exc)
            return
        self._dirty.clear()
        self._removed.clear()
        self._seen = self._state.signature()

    def _put(self, job: DownloadJob) -> DownloadJob:
        self._jobs[job.id] = job
        self._dirty.add(job.id)
        return job

    def _require(self, job_id: str) -> DownloadJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise EngineError(ErrorKind.BAD_INPUT, f"There is no download with id {printable(str(job_id))}.")
        return job

    def _change(self, job_id: str, allowed: tuple[str, ...], state: str, verb: str, stop: bool = False, discard: bool = False) -> DownloadJob:
        with self._transaction() as changed:
            job = self._require(job_id)
            if job.state == state:
                return job
            if job.state == RUNNING and job_id not in self._runs:
                raise EngineError(ErrorKind.BUSY, f"{job.name} is being downloaded by another Atelier process "
                                  f"(pid {job.owner_pid}); it cannot be {verb} from here.")
            if job.state not in allowed:
                raise EngineError(ErrorKind.BAD_INPUT, f"{job.name} is {job.state}: it cannot be {verb}.")
            run = self._runs.get(job_id)
            if stop and run is not None:
                run.cancel.set()
                run.discard = run.discard or discard
            elif discard:
                self._staging.discard(job_id, running_here=False)
            bytes_done = 0 if discard else job.bytes_done
            self._put(replace(job, state=state, error=None, speed_bps=0.0, eta_s=None, bytes_done=bytes_done, owner=None))
            changed.append(job_id)
        return self.get(job_id) or job

    def _pump(self) -> list[str]:
        """Start queued jobs while fewer than max_parallel run, here and elsewhere (lock held)."""
        if not self._started:
            return []
        busy = len(self._runs) + sum(1 for j in self._jobs.values() if j.state == RUNNING and j.id not in self._runs)
        started = []
        for job in sorted(self._jobs.values(), key=lambda j: j.created_at):
            if busy >= self._max_parallel:
                break
            if job.state != QUEUED or job.id in self._runs:  # a paused worker may still be stopping
                continue
            hold = self._staging.hold(job.id)
            if hold is None:
                continue  # another process is still letting go of it
            run = self._runs[job.id] = JobRun(hold)
            self._put(replace(job, state=RUNNING, error=None, owner=self._token))
            started.append(job.id)
            busy += 1
            run.thread = threading.Thread(target=self._work, args=(job.id, run), name=f"download {job.name}", daemon=True)
            run.thread.start()
        return started

    def _known_ids(self) -> set:
        """The ids of every job in the file, refused ones included (their partial files are not orphans)."""
        refused = {item.get("id") for item in self._snapshot.invalid if isinstance(item, dict)}
        return set(self._jobs) | refused

    def _emit(self, job_ids: list[str]) -> None:
        """Tell listeners, with each job as it is *now*: threads may deliver out of order."""
        with self._lock:
            listeners = self._listeners
            events = [(job_id, self._jobs.get(job_id)) for job_id in dict.fromkeys(job_ids)]
        for job_id, job in events:
            for callback in listeners:
                try:
                    callback(job_id, job)
                except Exception as exc:  # noqa: BLE001 - a broken listener must not stop downloads
                    log.error("download listener failed: %r", exc, exc_info=_traceback_to_log())

    def _poll(self) -> None:
        while not self._stop_polling.wait(POLL_S):
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - keep following; the next round tries again
                log.info("download queue: could not read %s: %r", self._state.path, exc)

    # -- the worker ---------------------------------------------------------------

    def _work(self, job_id: str, run: JobRun) -> None:
        job = self.get(job_id)
        outcome: tuple[str, str | None] | None = None
        rejected = False
        session = None
        try:
            if job is None:
                raise DownloadCancelled(job_id)  # cancelled and removed before this thread ran
            staging = self._staging.folder(job_id)
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
            if self._check is not None:
                self._check(job, staging if job.is_folder else staging / safe_relpath(job.files[0].relpath))
            self._install(job_id, run, staging)
            outcome = (COMPLETED, None)
        except DownloadCancelled:
            pass  # whoever set the event already set the state
        except OfflineError as exc:
            outcome = (PAUSED, exc.message)
        except DownloadRejected as exc:
            outcome, rejected = (FAILED, exc.message), True
        except EngineError as exc:
            outcome = (FAILED, exc.message)
        except Exception as exc:  # noqa: BLE001 - report, never kill the thread silently
            log.error("download %s failed: %r", job_id, exc, exc_info=_traceback_to_log())
            outcome = (FAILED, f"The download stopped on an unexpected error: {exc}")
        finally:
            if session is not None:
                session.close()
        with self._transaction(strict=False) as changed:  # the outcome reaches the file first...
            current = self._jobs.get(job_id)
            if run.discard or rejected:
                self._staging.discard(job_id, running_here=True)
            if current is not None and current.state == RUNNING and outcome and outcome[0] != COMPLETED:
                done = 0 if rejected else sum(run.done.values())
                current = self._put(replace(current, state=outcome[0], error=outcome[1], speed_bps=0.0, eta_s=None,
                                            bytes_done=done, owner=None))
                changed.append(job_id)
        with self._lock:  # ...then the lock says that nobody runs the job
            del self._runs[job_id]
            if current is None or current.state == CANCELLED:
                self._staging.forget_lock(job_id)
            run.hold.release()
        with self._transaction(strict=False):  # start what may start now (this job again, if resumed meanwhile)
            pass

    def _install(self, job_id: str, run: JobRun, staging: Path) -> None:
        """Rename the finished staging file or folder into place, as one step."""
        with self._transaction(strict=False) as changed:
            job = self._jobs.get(job_id)
            if job is None or job.state != RUNNING or run.cancel.is_set():
                raise DownloadCancelled(job_id)
            target = self._models / check_target(job.target)
            if target.exists() or target.is_symlink():
                raise EngineError(ErrorKind.BAD_INPUT, f"Cannot install {job.name}: '{job.target}' already exists in the models folder. The download is kept; move that away and retry.")
            target.parent.mkdir(parents=True, exist_ok=True)
            if job.is_folder:
                keep_only(staging, {staging / safe_relpath(spec.relpath) for spec in job.files})
                os.rename(staging, target)
            else:
                os.rename(staging / safe_relpath(job.files[0].relpath), target)
                shutil.rmtree(staging, ignore_errors=True)
            self._staging.forget_lock(job_id)  # safe under the state file's lock: nobody probes it before "completed"
            size = sum(run.done.values())
            if self._on_complete is not None:
                # Registered before the job reads "completed", so whoever sees that state
                # (a waiting CLI, the GUI, another process) also finds the model in the library.
                try:
                    self._on_complete(job)
                except Exception as exc:  # noqa: BLE001 - the file is installed; registering it is the caller's job
                    log.error("registering download %s failed: %r", job_id, exc, exc_info=_traceback_to_log())
            self._put(replace(job, state=COMPLETED, bytes_done=size, bytes_total=size, speed_bps=0.0, eta_s=0.0, error=None, owner=None))
            changed.append(job_id)

    def _check_space(self, job: DownloadJob, staging: Path) -> None:
        if any(spec.size is None for spec in job.files):
            return  # unknown sizes: the write itself reports a full disk
        needed = sum(spec.size for spec in job.files) - self._staging.bytes_on_disk(job)
        if needed > 0:
            check_disk_space(staging, needed)

    def _progress(self, job_id: str, run: JobRun, index: int, done: int, total: int | None) -> None:
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
            self._put(replace(job, bytes_done=bytes_done, bytes_total=bytes_total, speed_bps=speed, eta_s=eta))
        self._emit([job_id])  # the poller writes it to the state file, for the processes that follow the job

    def _latest_progress(self) -> list[str]:
        """Fold in the bytes written since the last notification, which a stalled transfer never sends (lock held)."""
        moved = []
        for job_id, run in self._runs.items():
            job = self._jobs.get(job_id)
            done = sum(run.done.values())
            if job is not None and job.state == RUNNING and done != job.bytes_done:
                self._put(replace(job, bytes_done=done))
                moved.append(job_id)
        return moved


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _were(n: int) -> str:
    return "was" if n == 1 else "were"


def _traceback_to_log() -> bool:
    """Tracebacks go to a configured log file, never to a bare stderr (a CLI without logging set up: D12)."""
    return bool(logging.getLogger().handlers)
