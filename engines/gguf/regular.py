"""Opening a model file only when it is a regular file, without ever blocking.

A plain ``open()`` of a FIFO named ``x.gguf`` waits for a writer for ever
(defect D7), and a device such as ``/dev/zero`` can be read for ever. So a
model file is opened non-blocking (which returns at once even for a FIFO
with no writer), checked with ``fstat`` on the descriptor that was opened
(no window for the path to be swapped between a check and the open), and
only then switched back to ordinary blocking reads. Windows has neither
FIFOs at ordinary paths nor ``O_NONBLOCK``: there the path is checked with
``stat`` first.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def what_it_is(mode: int) -> str:
    """'a FIFO (named pipe)', 'a socket'...: what a path that is not a regular file is."""
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


class NotARegularFileError(OSError):
    """The path is a FIFO, a device, a socket or a folder; ``message`` says which, for a person."""

    def __init__(self, path: str | os.PathLike[str], mode: int) -> None:
        self.mode = mode
        self.kind = what_it_is(mode)
        self.message = f"{Path(path).name} is not a regular file (it is {self.kind})."
        super().__init__(self.message)
        self.filename = os.fspath(path)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # crosses the engine-host pipe unchanged
        return (type(self), (self.filename, self.mode))


def open_regular_file(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for unbuffered binary reading, or raise :class:`NotARegularFileError`.

    Never blocks on a FIFO or a device. Other failures (missing, no
    permission) raise the usual ``OSError``.
    """
    nonblock = getattr(os, "O_NONBLOCK", 0)
    if not nonblock:  # Windows: no FIFOs at ordinary paths; refuse devices and folders by name
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFileError(path, mode)
    flags = os.O_RDONLY | nonblock | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # a socket cannot be opened at all (ENXIO): say what it is
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise NotARegularFileError(path, mode) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFileError(path, mode)
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
