"""Whether a file was made immutable or append-only (``chattr +i`` / ``+a``) while Atelier has it open.

SQLite keeps the WAL index (``-shm``) mapped in memory. When that file is
made immutable under a running app, the kernel answers the next write to a
clean page of the mapping with SIGBUS, which kills the process: SQLite
never gets to report an error. Asking the file system first (one ioctl per
file, before each write transaction) turns that into a refused write with
a sentence. Linux only; elsewhere, and on file systems without these
flags, nothing is ever reported.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

_FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long)
_IMMUTABLE = 0x00000010
_APPEND_ONLY = 0x00000020


def frozen(path: Path) -> bool:
    """True when ``path`` exists and is immutable or append-only; False when unknown."""
    if not sys.platform.startswith("linux"):
        return False
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
    except OSError:  # the file system has no such flags
        return False
    finally:
        os.close(fd)
    return bool(flags & (_IMMUTABLE | _APPEND_ONLY))


def any_frozen(database: Path) -> bool:
    """The database or its ``-wal``/``-shm`` companions can no longer be written in place."""
    return any(frozen(Path(f"{database}{suffix}")) for suffix in ("", "-wal", "-shm"))
