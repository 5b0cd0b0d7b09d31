"""A lock shared by every Atelier process on one profile, for read-modify-write of a state file.

Built on ``filelock`` (fcntl on POSIX, msvcrt on Windows): the lock is held
by an open file, so it is released by the operating system when the
holder dies, even by kill -9; there is never a stale lock to clean up. The
lock file sits beside the state file as ``<name>.lock``.

:func:`try_hold` is the long-lived kind: a process holds it for as long as
it does something others must not take over (a download), and whoever
finds it free knows the holder is gone, even after a kill -9.
"""

from __future__ import annotations

import contextlib
import threading
from os import PathLike
from pathlib import Path
from typing import Iterator

from filelock import FileLock
from filelock import Timeout as _Timeout

DEFAULT_TIMEOUT_S = 30.0


_locks: dict[str, FileLock] = {}
_locks_guard = threading.Lock()


class LockTimeout(OSError):
    """Another process held the state file's lock for longer than the timeout."""


@contextlib.contextmanager
def state_lock(path: str | PathLike[str], timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold the cross-process lock of the state file ``path`` (re-entrant within a thread)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    name = str(target.with_name(target.name + ".lock"))
    with _locks_guard:  # one FileLock per file: re-entrant in a thread, exclusive between threads
        lock = _locks.setdefault(name, FileLock(name))
    try:
        lock.acquire(timeout=timeout)
    except _Timeout:
        raise LockTimeout(f"{target.name} is being changed by another Atelier process; try again.") from None
    try:
        yield
    finally:
        lock.release()


def try_hold(path: str | PathLike[str]) -> FileLock | None:
    """Take the lock file ``path`` without waiting; None when someone else holds it.

    Unlike :func:`state_lock` it is not tied to a thread: a worker thread may
    release it (``.release()``), and a second holder in the same process is
    refused like another process, so each hold stands for one owner.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target), thread_local=False)
    try:
        lock.acquire(blocking=False)
    except _Timeout:
        return None
    return lock


def held_elsewhere(path: str | PathLike[str]) -> bool:
    """Whether another owner holds the lock file ``path`` now (a probe: takes and releases it at once)."""
    if not Path(path).exists():
        return False
    lock = try_hold(path)
    if lock is None:
        return True
    lock.release()
    return False
