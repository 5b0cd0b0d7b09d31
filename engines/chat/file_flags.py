"""Whether the history's files can still be written in place (``chattr +i``, a read-only mount, lost permissions).

SQLite keeps the WAL index (``-shm``) mapped in memory. When that file is
made immutable under a running app, the kernel answers the next write to a
clean page of the mapping with SIGBUS, which kills the process: SQLite
never gets to report an error. Asking the kernel first, before each write
transaction, turns that into a refused write with a sentence.

The check must never open the files: closing any descriptor of a file
drops every POSIX lock this process holds on it, SQLite's included, and
another process then takes the WAL index for unused and truncates it under
our mapping (SIGBUS again, seen with two writers). ``access(W_OK)`` asks
without opening: Linux refuses write access to an immutable inode even for
root, and so do read-only mounts and plain permissions everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path


def frozen(path: Path) -> bool:
    """True when ``path`` exists and cannot be written; False when it is writable or absent."""
    try:
        return path.exists() and not os.access(path, os.W_OK)
    except OSError:
        return False


def any_frozen(database: Path) -> bool:
    """The database or its ``-wal``/``-shm`` companions can no longer be written in place."""
    return any(frozen(Path(f"{database}{suffix}")) for suffix in ("", "-wal", "-shm"))
