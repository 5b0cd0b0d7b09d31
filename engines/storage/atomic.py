"""Atomic, durable replacement of a whole file.

The new bytes go to a uniquely named temporary file beside the target
(two processes never share it), which is fsynced, renamed over the target,
and then the folder is fsynced so that the rename itself survives a power
cut. A failure at any point removes the temporary file and leaves the
target as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from os import PathLike
from pathlib import Path


def fsync_folder(folder: str | PathLike[str]) -> None:
    """Make a rename inside ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | PathLike[str], data: bytes, *, mode: int | None = None) -> Path:
    """Replace ``path`` with ``data``: all of it or nothing, durable once this returns.

    The temporary name starts with a dot and ends in ``.tmp``, so folder
    scans skip it. Its mode follows the umask like any new file (not
    mkstemp's 0600), because exports and images are the user's files;
    ``mode`` (e.g. 0o600 for a secret) applies from the moment the
    temporary file is created, so the data is never readable by others.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name[:200]}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        with open(os.open(tmp, flags, 0o666 if mode is None else mode), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(target.parent)
    return target


def atomic_write_text(path: str | PathLike[str], text: str, *, mode: int | None = None) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text, written with ``\\n`` line ends as given."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)
