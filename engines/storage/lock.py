"""A lock shared by every Atelier process on one profile, for read-modify-write of a state file.

Built on ``filelock`` (fcntl on POSIX, msvcrt on Windows): the lock is held
by an open file, so it is released by the operating system when the
holder dies, even by kill -9; there is never a stale lock to clean up. The
lock file sits beside the state file as ``<name>.lock``.
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
