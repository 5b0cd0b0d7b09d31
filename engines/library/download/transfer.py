"""Download one file so that it never corrupts: resumable, verified, atomic.

Bytes go to ``<dest>.part``; a sidecar ``<dest>.part.json`` remembers what
they belong to (URL, size, ETag, expected SHA-256), so a later call — after
a dropped connection, a pause or a killed app — resumes with a Range request
only when the server still offers the same file, and starts over otherwise.
The SHA-256 is computed while streaming; the file is fsynced and renamed
into place only once its size and hash are right. A mismatch deletes the
part: a broken model file must never look installed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable
from urllib.parse import urlsplit

import requests

from engines.byte_sizes import format_bytes
from engines.errors import EngineError, ErrorKind
from engines.network import CONNECTION_ERRORS, cut_connection, make_session, require_network, sha256_from_etag
from engines.library.probes.names import strip_controls
from engines.storage import atomic_write_text, fsync_folder

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# Start writing each 32 MiB to disk as soon as it is done, so the final fsync stays short. Measured with
# benchmarks/bench_download.py's harness (512 MiB from 127.0.0.1, SHA-256 and fsync included, 5-8 rotated
# rounds, twice): median 467 / 498 MB/s every 64 MiB, 712 / 948 every 32 MiB, 576 / 760 every 8 MiB. This
# virtual machine's disk swings a run by 2x, so the figures are rough; 32 MiB won both times.
WRITE_BEHIND = 32 << 20
CONNECT_TIMEOUT = 15.0
MAX_RESTARTS = 3  # the server changed the file this often during one call: give up
# The longest name a downloaded file may have: file systems allow 255 bytes, and the
# download writes "<name>.part.json" beside it.
MAX_NAME_BYTES = 255 - len(".part.json")
NETWORK, DISK_FULL, GATED, NOT_FOUND = ErrorKind.NETWORK, ErrorKind.DISK_FULL, ErrorKind.GATED, ErrorKind.NOT_FOUND
Progress = Callable[[int, "int | None"], None]


class DownloadCancelled(Exception):
    """The cancel event was set. The ``.part`` is kept, so the download can resume."""


@dataclass(frozen=True)
class FileSpec:
    """One file to fetch: where from, where to (relative), and what it must be."""

    url: str
    relpath: str
    size: int | None = None
    sha256: str | None = None


def safe_relpath(relpath: str) -> PurePosixPath:
    """*relpath* as a path that cannot leave the folder it is joined to, nor fool a terminal.

    File names come from a server, a catalog or a state file; ``../../.bashrc``
    must not become a write outside the models folder, on any OS. Control
    characters (ESC, CR, LF, the rest of C0 and C1, bidirectional overrides)
    are refused too: printed, they would rewrite the user's terminal. A name
    too long for the file system is refused with its length, up front.
    """
    parts = relpath.split("/") if isinstance(relpath, str) else [""]
    if (
        not relpath
        or "\x00" in relpath
        or "\\" in relpath
        or relpath.startswith("/")
        or re.match(r"^[A-Za-z]:", relpath)
        or any(part in ("", ".", "..") or ":" in part for part in parts)
    ):
        shown = printable(str(relpath))
        raise EngineError(ErrorKind.BAD_INPUT, f"Refusing the file name '{shown}': it would be written outside the models folder.")
    if strip_controls(relpath) != relpath:
        raise EngineError(
            ErrorKind.BAD_INPUT,
            f"Refusing the file name '{printable(relpath)}': it contains control characters (such as a line "
            "break or a terminal escape).",
        )
    for part in parts:
        size = len(part.encode("utf-8"))
        if size > MAX_NAME_BYTES:
            raise EngineError(
                ErrorKind.BAD_INPUT,
                f"Refusing the file name '{part[:60]}…': it is {size} bytes long, and a downloaded file's name "
                f"may have at most {MAX_NAME_BYTES}.",
            )
    return PurePosixPath(*parts)


def printable(text: str) -> str:
    """*text* with each control character written as an escape (``\\x1b``), safe to show anywhere."""
    return "".join(ch if strip_controls(ch) == ch else ascii(ch)[1:-1] for ch in text)


def check_disk_space(folder: Path, needed_bytes: int, margin: int | None = None) -> None:
    """Refuse up front when *folder*'s disk cannot hold *needed_bytes* plus a margin.

    The margin (max of 512 MB and 5 %) keeps the system usable after the
    download; failing before the first byte beats failing at 97 %.
    """
    margin = max(512_000_000, needed_bytes // 20) if margin is None else margin
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes + margin:
        raise EngineError(
            DISK_FULL,
            f"Not enough disk space: this download needs {format_bytes(needed_bytes)} plus "
            f"{format_bytes(margin)} to spare, but only {format_bytes(free)} are free in {folder}.",
        )


def download_file(
    spec: FileSpec,
    dest: Path,
    *,
    session: requests.Session | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    stall_timeout: float = 30.0,
    max_attempts: int = 6,
    backoff: tuple[float, ...] = (1, 2, 4, 8, 16, 30),
    token: str | None = None,
) -> Path:
    """Fetch *spec* into *dest*, resuming a previous ``.part``; return *dest*.

    *progress(done, total)* is called from this thread after every chunk.
    Raises :class:`DownloadCancelled` when *cancel* is set (the part stays),
    and :class:`EngineError` with a message for the user on any failure.
    """
    require_network(f"downloading {PurePosixPath(spec.relpath).name or spec.url}")
    own = session is None
    session = session or make_session()
    job = _Transfer(spec, Path(dest), session, progress, cancel, stall_timeout, max_attempts, tuple(backoff), token)
    try:
        return job.run()
    except requests.RequestException as exc:  # a bad URL and the like: retrying cannot help
        raise EngineError(NETWORK, f"Could not download {job.name} from {spec.url}: {exc}") from exc
    except OSError as exc:  # the disk: full, read-only, no permission (sidecar, part, rename)
        raise job.disk_error(exc) from exc
    finally:
        if own:
            session.close()


class _Retry(Exception):
    """This attempt failed in a way worth retrying (drop, stall, 5xx)."""

    def __init__(self, reason: str, status: int | None = None, reached: bool = True) -> None:
        super().__init__(reason)
        self.status, self.reached = status, reached


class _Restart(Exception):
    """The partial bytes cannot be continued: start over from byte 0."""


class _Transfer:
    def __init__(self, spec, dest, session, progress, cancel, stall_timeout, max_attempts, backoff, token) -> None:
        self.spec, self.dest, self.session = spec, dest, session
        self.progress = progress or (lambda done, total: None)
        self.cancellable = cancel is not None
        self.cancel = cancel or threading.Event()
        self.stall_timeout, self.max_attempts, self.backoff, self.token = stall_timeout, max(1, max_attempts), backoff, token
        self.part = dest.with_name(dest.name + ".part")
        self.sidecar = dest.with_name(dest.name + ".part.json")
        self.name = PurePosixPath(spec.relpath).name or dest.name
        self.host = urlsplit(spec.url).hostname or spec.url
        self.meta: dict = {}
        self.hasher, self.hashed = None, 0  # SHA-256 of the part's first `hashed` bytes
        self.failures = self.restarts = 0
        self.current = None  # the response being streamed, for the cancel watchdog
        self.body_end: int | None = None
        self.done = threading.Event()

    # -- the loop -------------------------------------------------------------

    def run(self) -> Path:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self._load_sidecar()
        if self.cancellable:
            threading.Thread(target=self._watchdog, name=f"cancel-watch {self.name}", daemon=True).start()
        try:
            while True:
                if self.cancel.is_set():
                    raise DownloadCancelled(self.name)
                have, size = self._part_size(), self.meta.get("size")
                if size is not None and have == size and have > 0:
                    break  # complete from an earlier call (killed before the rename)
                if size is not None and have > size:
                    self._discard()
                    continue
                try:
                    self._attempt(have)
                    break
                except _Restart:
                    self._discard()
                    self.restarts += 1
                    if self.restarts > MAX_RESTARTS:
                        raise EngineError(NETWORK, f"{self.name} keeps changing on {self.host} while it downloads; try again later.") from None
                except _Retry as retry:
                    self._after_failure(retry, have)
            return self._finish()
        finally:
            self.done.set()

    def _after_failure(self, retry: _Retry, had: int) -> None:
        if self.cancel.is_set():
            raise DownloadCancelled(self.name)
        have = self._part_size()
        self.failures = 1 if have > had else self.failures + 1  # progress resets the count
        log.info("%s: attempt failed (%d in a row): %s", self.spec.url, self.failures, retry)
        if self.failures >= self.max_attempts:
            kept = f"; the partial download ({format_bytes(have)} of {self.name}) is kept and will resume." if have else "."
            if retry.status:
                what = f"{self.host} answered HTTP {retry.status} {self.failures} times in a row; try again later"
            elif not retry.reached:
                what = f"Could not reach {self.host} after {self.failures} attempts; check the internet connection"
            else:
                what = f"The connection to {self.host} dropped {self.failures} times"
            raise EngineError(NETWORK, what + kept)
        delay = self.backoff[min(self.failures - 1, len(self.backoff) - 1)] if self.backoff else 0
        if delay and self.cancel.wait(delay):
            raise DownloadCancelled(self.name)

    def _watchdog(self) -> None:
        """Cut the socket when cancel is set, so a pause never waits on a stalled read."""
        while not self.done.is_set():
            if self.cancel.wait(0.1):
                resp = self.current
                cut_connection(resp)
                if resp is not None or self.done.wait(0.1):
                    return

    # -- one HTTP request -----------------------------------------------------

    def _attempt(self, offset: int) -> None:
        headers = {"Accept-Encoding": "identity"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if offset:
            headers["Range"] = f"bytes={offset}-"
            etag = self.meta.get("etag") or ""
            validator = etag if etag and not etag.startswith("W/") else self.meta.get("last_modified")
            if validator:
                headers["If-Range"] = validator
        try:
            resp = self.session.get(self.spec.url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT, self.stall_timeout))
        except requests.TooManyRedirects:
            raise EngineError(NETWORK, f"The address of {self.name} redirects in a loop; the link is wrong or the server misconfigured: {self.spec.url}") from None
        except requests.exceptions.SSLError as exc:
            raise EngineError(NETWORK, f"The secure connection to {self.host} could not be verified, so nothing was downloaded: {exc}") from None
        except CONNECTION_ERRORS as exc:
            self._fail_fast_on_redirect_target(exc)
            raise _Retry(str(exc), reached=False) from None
        self.current = resp
        try:
            offset = self._accept(resp, offset)
            self._stream(resp, offset)
        finally:
            self.current = None
            resp.close()

    def _fail_fast_on_redirect_target(self, exc: Exception) -> None:
        """A redirect to a host that does not resolve or refuses: say so now, naming that host (D27).

        Retrying cannot fix a wrong link, and the user must hear which host
        failed, not the one that redirected. Timeouts and resets still retry.
        """
        url = getattr(getattr(exc, "request", None), "url", None) or ""
        target = urlsplit(url).netloc
        if not target or target == urlsplit(self.spec.url).netloc or isinstance(exc, requests.Timeout):
            return
        raise EngineError(
            NETWORK,
            f"Could not download {self.name}: {self.host} redirected it to {printable(target)}, which cannot be "
            f"reached ({_why_unreachable(exc)}). The link may be wrong; nothing was downloaded. ({printable(url)})",
        )

    def _accept(self, resp: requests.Response, offset: int) -> int:
        """Check the answer and the file's identity; return the offset the body starts at."""
        code = resp.status_code
        if code in (401, 403):
            if self.token:
                msg = f"Your Hugging Face token has no access to {self.name}: open the model's page, accept its terms or request access, then retry."
            else:
                msg = f"{self.name} is in a gated repository: add a Hugging Face token in Settings and accept the model's terms on its page, then retry."
            raise EngineError(GATED, msg)
        if code in (404, 410):
            raise EngineError(NOT_FOUND, f"{self.name} was not found on the server ({code}): {self.spec.url}")
        if code == 416:
            raise _Restart()
        if code in (408, 425, 429) or code >= 500:
            raise _Retry(f"HTTP {code}", status=code)
        if code not in (200, 206):
            raise EngineError(NETWORK, f"The server answered HTTP {code} {resp.reason} for {self.spec.url}.")
        if resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
            raise EngineError(NETWORK, f"{self.host} sent {self.name} compressed although Atelier asked for the plain file.")
        length = _int(resp.headers.get("Content-Length"))
        if code == 206:
            match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if not match or int(match[1]) != offset:
                raise _Restart()
            total = _int(match[3])
        else:
            offset, total = 0, length
        chain = [*resp.history, resp]
        linked = next((r.headers["X-Linked-ETag"] for r in chain if "X-Linked-ETag" in r.headers), None)
        server_sha = sha256_from_etag(linked or chain[0].headers.get("ETag"))
        total = total or _int(next((r.headers["X-Linked-Size"] for r in chain if "X-Linked-Size" in r.headers), None))
        etag = resp.headers.get("ETag")
        if offset and (
            (self.meta.get("etag") and etag != self.meta["etag"])
            or (self.meta.get("size") and total and total != self.meta["size"])
            or (self.meta.get("server_sha256") and server_sha and server_sha != self.meta["server_sha256"])
        ):
            raise _Restart()  # the server now has another file than the one in the part
        if self.spec.size is not None and total is not None and total != self.spec.size:
            self._discard()
            raise EngineError(ErrorKind.MODEL_FILE, f"The server offers {self.name} as {total:,} bytes, but {self.spec.size:,} were expected. Nothing was installed.")
        self.meta = {
            "url": self.spec.url,
            "size": self.spec.size if self.spec.size is not None else total,
            "etag": etag,
            "last_modified": resp.headers.get("Last-Modified"),
            "sha256": (self.spec.sha256 or server_sha or "").lower() or None,
            "server_sha256": server_sha,
        }
        self._save_sidecar()
        self.body_end = offset + length if length is not None else None
        return offset

    def _stream(self, resp: requests.Response, offset: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0) | (0 if offset else os.O_TRUNC)
        if offset == 0 or self.hasher is None or self.hashed != offset:
            self._rehash(offset)
        fd = os.open(self.part, flags, 0o644)
        done, total, read1 = offset, self.meta.get("size"), resp.raw.read1
        hasher = _HashThread(self.hasher, fd, offset)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            os.ftruncate(fd, offset)  # a previous ENOSPC may have left a torn tail
            while not self.cancel.is_set():
                try:
                    chunk = read1(CHUNK, decode_content=False)
                except CONNECTION_ERRORS as exc:
                    raise _Retry(str(exc)) from None
                if not chunk:
                    break
                try:
                    written = os.write(fd, chunk)
                    while written < len(chunk):
                        written += os.write(fd, memoryview(chunk)[written:])
                except OSError as exc:
                    self.hasher = None
                    raise self.disk_error(exc) from exc
                hasher.update(chunk)
                done += len(chunk)
                self.hashed = done
                self.progress(done, total)
        finally:
            hasher.close()  # afterwards self.hasher covers exactly the bytes written
            os.close(fd)
        if self.cancel.is_set():
            raise DownloadCancelled(self.name)
        if self.body_end is not None and done < self.body_end:
            raise _Retry(f"the connection closed after {done:,} of {self.body_end:,} bytes")

    # -- files ----------------------------------------------------------------

    def _finish(self) -> Path:
        size = self._part_size()
        expected_size = self.spec.size if self.spec.size is not None else self.meta.get("size")
        if expected_size is not None and size != expected_size:
            self._discard()
            raise EngineError(ErrorKind.MODEL_FILE, f"The download of {self.name} is corrupt: expected {expected_size:,} bytes, got {size:,}. Nothing was installed.")
        if self.hasher is None or self.hashed != size:
            self._rehash(size)
        got, expected = self.hasher.hexdigest(), (self.spec.sha256 or self.meta.get("sha256") or "").lower()
        if expected and got != expected:
            self._discard()
            raise EngineError(ErrorKind.MODEL_FILE, f"The download of {self.name} is corrupt: expected SHA-256 {expected[:12]}…, got {got[:12]}…. Nothing was installed.")
        fd = os.open(self.part, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)  # the bytes are on disk before the name says the file is there
        finally:
            os.close(fd)
        os.replace(self.part, self.dest)
        self.sidecar.unlink(missing_ok=True)
        fsync_folder(self.dest.parent)
        return self.dest

    def disk_error(self, exc: OSError) -> EngineError:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            total = self.meta.get("size")
            of = f" of {format_bytes(total)}" if total else ""
            return EngineError(DISK_FULL, f"The disk is full: {format_bytes(self._part_size())}{of} of {self.name} were downloaded and kept; free some space and resume.")
        return EngineError(ErrorKind.MODEL_FILE, f"Could not write {self.part}: {exc.strerror or exc}.")

    def _rehash(self, upto: int) -> None:
        """Hash the part's first *upto* bytes, streaming (parts can be many GB)."""
        self.hasher, self.hashed = hashlib.sha256(), 0
        if upto <= 0:
            return
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        with open(self.part, "rb", buffering=0) as f:
            while self.hashed < upto:
                n = f.readinto(view[: min(CHUNK, upto - self.hashed)])
                if not n:
                    break
                self.hasher.update(view[:n])
                self.hashed += n

    def _load_sidecar(self) -> None:
        try:
            meta = json.loads(self.sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        spec = self.spec
        stale = (
            not isinstance(meta, dict)
            or meta.get("url") != spec.url
            or (spec.sha256 and meta.get("sha256") and meta["sha256"] != spec.sha256.lower())
            or (spec.size is not None and meta.get("size") is not None and meta["size"] != spec.size)
        )
        if stale or not self.part.exists():
            self._discard()
        else:
            self.meta = meta

    def _save_sidecar(self) -> None:
        atomic_write_text(self.sidecar, json.dumps(self.meta))

    def _discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)
        self.meta, self.hasher, self.hashed = {}, None, 0

    def _part_size(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0


class _HashThread:
    """Feeds a SHA-256 on its own thread, so hashing overlaps the network and the disk.

    hashlib releases the GIL on large buffers, as do recv and write: in
    one thread the three costs add up, here the slowest one sets the pace.
    Chunks are immutable bytes, so handing them over needs no copy. The
    same thread starts the writeback of every :data:`WRITE_BEHIND` bytes
    written (fd stays open until :meth:`close` has joined it).
    """

    def __init__(self, hasher, fd: int, offset: int) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._room = threading.Semaphore(16)  # at most 16 chunks (16 MiB) waiting
        self._thread = threading.Thread(target=self._run, args=(hasher, fd, offset), name="sha256", daemon=True)
        self._thread.start()

    def _run(self, hasher, fd: int, offset: int) -> None:
        done = flushed = offset
        while (chunk := self._queue.get()) is not None:
            hasher.update(chunk)
            self._room.release()
            done += len(chunk)
            if done - flushed >= WRITE_BEHIND:
                _write_behind(fd, flushed, done - flushed)
                flushed = done

    def update(self, chunk: bytes) -> None:
        self._room.acquire()
        self._queue.put(chunk)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


def _write_behind(fd: int, offset: int, length: int) -> None:
    """Start writeback of a just-written range without waiting for it (Linux).

    POSIX_FADV_DONTNEED on dirty pages kicks off their writeback and leaves
    them cached; without it a fast download ends with seconds of fsync, and
    many GB of dirty pages crowd everything else out of memory.
    """
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _int(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _why_unreachable(exc: Exception) -> str:
    """A few words on why a connection failed, from requests' long chained message."""
    text = str(exc)
    if any(sign in text for sign in ("NameResolution", "Name or service not known", "nodename nor servname",
                                     "getaddrinfo failed", "No address associated", "Temporary failure in name")):
        return "its name does not resolve"
    if "refused" in text.lower():
        return "it refused the connection"
    return "the connection failed"
