"""Reading a document's bytes: only regular files, bounded in size, and never a file caught mid-change.

A collection is built from whatever the user drops in, so the bytes are
read the careful way: through :func:`engines.gguf.regular.open_regular_file`
(a FIFO or a device named ``notes.txt`` never blocks the indexer), at most
:data:`MAX_DOCUMENT_BYTES` (a bigger file is refused, not streamed: a
document of that size is a database dump or a log, and indexing it would
fill the index with noise for an hour), and checked after reading: if the
size or modification time moved while it was read, the bytes may be half
old and half new, so the file is skipped with that reason and read again
on the next run. Every failure is a :class:`Unreadable` with a sentence.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass

from engines.byte_sizes import format_bytes
from engines.gguf.regular import NotARegularFileError, open_regular_file

MAX_DOCUMENT_BYTES = 200_000_000  # a 2,000-page PDF with images is about 100 MB


class Unreadable(Exception):
    """The file cannot be indexed; ``str()`` is the reason, for a person."""


@dataclass(frozen=True)
class FileBytes:
    data: bytes
    size: int
    mtime_ns: int
    sha256: str


def read_document_bytes(path: str) -> FileBytes:
    """The file's bytes and their hash, or :class:`Unreadable` with the reason."""
    try:
        handle = open_regular_file(path)
    except NotARegularFileError as exc:
        raise Unreadable(f"not a regular file (it is {exc.kind})") from None
    except OSError as exc:
        raise Unreadable(_os_reason(exc)) from None
    with handle:
        before = os.fstat(handle.fileno())
        if before.st_size == 0:
            raise Unreadable("the file is empty (0 bytes)")
        if before.st_size > MAX_DOCUMENT_BYTES:
            raise Unreadable(f"the file is {format_bytes(before.st_size)}, more than the "
                             f"{format_bytes(MAX_DOCUMENT_BYTES)} a document may be; it was not read")
        try:
            data = _read_all(handle, before.st_size)
        except OSError as exc:
            raise Unreadable(_os_reason(exc)) from None
        after = os.fstat(handle.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or len(data) != before.st_size:
        raise Unreadable("the file changed while it was being read; it will be read again on the next run")
    return FileBytes(data, before.st_size, before.st_mtime_ns, hashlib.sha256(data).hexdigest())


def _read_all(handle, size: int) -> bytes:
    """Up to ``size`` + 1 bytes (one more shows a file that grew while it was read)."""
    chunks, left = [], size + 1
    while left > 0:
        chunk = handle.read(min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop (the link points back to itself)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied: Atelier may not read this file"
    if exc.errno == errno.ENOENT:
        return "the file is gone (deleted or moved while indexing)"
    return f"it cannot be read: {exc.strerror or exc}"
