"""Looking at a path without ever blocking on it.

A FIFO named ``x.gguf`` makes a plain ``open()`` wait for a writer for ever
(defect D7), a device file can be read for ever, and a symbolic-link loop
makes ``Path.resolve()`` raise (D24). Probes therefore stat first, open
only regular files, open them non-blocking in case the file was swapped
between the stat and the open, and read a bounded number of bytes.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from engines.gguf.regular import NotARegularFileError, open_regular_file, what_it_is


class Unreadable(Exception):
    """The path cannot be looked at; ``message`` says why, for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def stat_path(path: Path) -> os.stat_result:
    """``os.stat`` (following links) with a sentence for each way it fails."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise Unreadable(f"{path.name} is a symbolic link to something that does not exist.") from None
        raise Unreadable(f"{path} does not exist.") from None  # the whole path: its name alone would not help
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unreadable(f"{path.name} is a symbolic link loop (it points back to itself).") from None
        raise Unreadable(f"{path.name} cannot be read: {exc.strerror or exc}.") from None


def read_prefix(path: Path, size: int) -> bytes:
    """Up to ``size`` bytes from the start of a regular file; never blocks on a FIFO or device.

    Opened with the one helper for model files (:func:`engines.gguf.open_regular_file`).
    """
    try:
        with open_regular_file(path) as f:
            chunks, left = [], size
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
    except NotARegularFileError as exc:
        raise Unreadable(exc.message) from None
    except OSError as exc:
        raise Unreadable(f"{path.name} cannot be read: {exc.strerror or exc}.") from None


def real_path(path: str | Path) -> str:
    """The canonical path, for comparing records; a link loop gives the path as it is, never an error."""
    return os.path.realpath(os.path.expanduser(str(path)))


def folder_size(folder: Path) -> int:
    """Bytes of the regular files under ``folder``, without following linked folders (no loops)."""
    total = 0
    for root, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue  # a dangling link or a loop: counts for nothing
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def irregular_files(folder: Path) -> list[str]:
    """Files under ``folder`` (relative paths) that are FIFOs, sockets or devices: never to be opened."""
    found = []
    for root, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            full = os.path.join(root, name)
            try:
                mode = os.stat(full).st_mode
            except OSError:
                continue
            if not stat.S_ISREG(mode):
                found.append(f"{os.path.relpath(full, folder)} ({what_it_is(mode)})")
    return found
