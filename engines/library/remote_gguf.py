"""Read a GGUF header over HTTP without downloading the model.

Before offering a download, the library wants to know what a remote GGUF
file really is: its architecture, layer and head counts (for the memory
estimate), its quantization and chat template. All of that sits in the
header at the start of the file, usually a few megabytes of a file that may
weigh tens of gigabytes, so we fetch only a prefix with HTTP Range requests
and feed it to :func:`engines.gguf.read_gguf_header_from_bytes`.

The parser says how much more it needs (:class:`GGUFNeedMoreData`); we then
fetch only the missing bytes, at least doubling what we hold so that a large
vocabulary costs a handful of requests, never hundreds, and never more than
``max_bytes`` in total. A server that ignores Range and answers 200 with the
whole file is read progressively from the same stream, which is closed as
soon as the header is complete, so we never pull the whole model.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import requests
import urllib3

from engines.byte_sizes import format_bytes
from engines.errors import EngineError, ErrorKind
from engines.gguf import GGUFError, GGUFHeader, GGUFNeedMoreData, read_gguf_header_from_bytes
from engines import network

__all__ = ["DEFAULT_FIRST_BYTES", "DEFAULT_MAX_BYTES", "GATED", "NETWORK", "NOT_FOUND", "read_remote_gguf_header"]

# The kinds the downloader uses too (short names for engines.errors.ErrorKind members),
# so the GUI treats "no connection", "needs a token" and "no such file" alike everywhere.
NETWORK, GATED, NOT_FOUND = ErrorKind.NETWORK, ErrorKind.GATED, ErrorKind.NOT_FOUND

MiB = 1024 * 1024
DEFAULT_FIRST_BYTES = 4 * MiB
DEFAULT_MAX_BYTES = 64 * MiB
TIMEOUT = (10, 30)  # connect, read (seconds): a header is small, a stall is a failure
_READ_CHUNK = 256 * 1024
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def read_remote_gguf_header(
    url: str,
    *,
    session: requests.Session | None = None,
    token: str | None = None,
    first_bytes: int = DEFAULT_FIRST_BYTES,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> GGUFHeader:
    """The header of the GGUF file at *url*, fetching as little of it as possible.

    *token* is sent as a bearer token; without one, the saved Hugging Face
    token is sent, but only when *url* is on the Hub itself. Raises
    :class:`~engines.network.OfflineError` in offline mode and
    :class:`EngineError` for network failures, HTTP errors and files that are
    not (valid) GGUF, with a message that can be shown to the user.
    """
    network.require_network("reading the model's header")
    if first_bytes <= 0 or max_bytes <= 0:
        raise ValueError("first_bytes and max_bytes must be positive")
    reader = _PrefixReader(url, session or network.make_session(), token, own_session=session is None)
    try:
        want = min(first_bytes, max_bytes)
        while True:
            reader.fill(want)
            try:
                return read_gguf_header_from_bytes(reader.data, reader.total, max_header_bytes=max_bytes)
            except GGUFNeedMoreData as exc:
                have = len(reader.buffer)
                want = min(max(exc.needed_bytes, 2 * have), max_bytes)
                if reader.total is not None:
                    want = min(want, reader.total)
                if want <= have:  # cannot happen with a consistent parser; never loop forever
                    raise EngineError(
                        ErrorKind.MODEL_FILE,
                        f"The header of {_name(url)} is larger than {format_bytes(max_bytes)}; "
                        "it is not a model Atelier can read.",
                    ) from exc
            except GGUFError as exc:
                raise EngineError(ErrorKind.MODEL_FILE, f"{_name(url)}: {exc.message}") from exc
    finally:
        reader.close()


class _PrefixReader:
    """Holds the first ``len(data)`` bytes of the remote file and fetches more.

    Normally each :meth:`fill` is one Range request for the missing bytes. If
    the server answers 200 (Range ignored), the response is kept open and
    later fills read further along the same stream.
    """

    def __init__(self, url: str, session: requests.Session, token: str | None, own_session: bool) -> None:
        self.url = url
        self.session = session
        self.own_session = own_session
        self.buffer = bytearray()
        self.total: int | None = None
        self.stream: requests.Response | None = None
        self.headers = {"Accept-Encoding": "identity"}  # byte offsets must be offsets in the file
        bearer = token if token is not None else network.token_for(url)
        if bearer:
            self.headers["Authorization"] = f"Bearer {bearer}"

    @property
    def data(self) -> bytes:
        return bytes(self.buffer)

    def fill(self, want: int) -> None:
        """Make the buffer hold ``want`` bytes, or the whole file if it is shorter."""
        try:
            if self.stream is None and len(self.buffer) < want:
                self._range_request(want)
            if self.stream is not None and len(self.buffer) < want:
                self._read_stream(want)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise EngineError(
                NETWORK, f"Could not read {_name(self.url)} from {_host(self.url)}: {_reason(exc)}"
            ) from exc

    def _range_request(self, want: int) -> None:
        start = len(self.buffer)
        headers = dict(self.headers, Range=f"bytes={start}-{want - 1}")
        response = self.session.get(self.url, headers=headers, stream=True, timeout=TIMEOUT)
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if response.status_code in (200, 206) and encoding not in ("", "identity"):
            response.close()
            raise EngineError(
                NETWORK, f"{_host(self.url)} sent {_name(self.url)} compressed ({encoding}) although asked not to."
            )
        if response.status_code == 200:  # Range ignored: the body is the whole file from byte 0
            self.buffer.clear()
            self.stream = response
            length = response.headers.get("Content-Length", "")
            self.total = int(length) if length.isdigit() else None
            return
        try:
            if response.status_code == 416:
                raise EngineError(ErrorKind.MODEL_FILE, f"{_name(self.url)} is empty on the server.")
            if response.status_code != 206:
                raise _http_error(self.url, response)
            first, _last, total = _content_range(response)
            if first != start:
                raise EngineError(
                    NETWORK,
                    f"{_host(self.url)} sent bytes from {first:,} when asked for bytes from {start:,}.",
                )
            if total is not None:
                self.total = total
            chunk = _read_at_most(response, want - start)
        finally:
            response.close()
        self.buffer += chunk
        expected = want if self.total is None else min(want, self.total)
        if len(self.buffer) < expected:
            raise EngineError(
                NETWORK,
                f"{_host(self.url)} closed the connection after {len(self.buffer):,} of {expected:,} bytes.",
            )

    def _read_stream(self, want: int) -> None:
        assert self.stream is not None
        chunk = _read_at_most(self.stream, want - len(self.buffer))
        self.buffer += chunk
        if len(self.buffer) < want:  # end of the body: that is the whole file
            if self.total is not None and len(self.buffer) < self.total:
                raise EngineError(
                    NETWORK,
                    f"{_host(self.url)} closed the connection after {len(self.buffer):,} of {self.total:,} bytes.",
                )
            self.total = len(self.buffer)
            self._close_stream()

    def _close_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def close(self) -> None:
        self._close_stream()
        if self.own_session:
            self.session.close()


def _read_at_most(response: requests.Response, count: int) -> bytes:
    """Read up to *count* body bytes, never more, whatever the server sends."""
    parts: list[bytes] = []
    remaining = count
    while remaining > 0:
        chunk = response.raw.read(min(remaining, _READ_CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def _content_range(response: requests.Response) -> tuple[int, int, int | None]:
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if not match:
        raise EngineError(
            NETWORK,
            f"{_host(response.url)} answered a range request without a valid Content-Range header.",
        )
    first, last, total = match.groups()
    return int(first), int(last), None if total == "*" else int(total)


def _http_error(url: str, response: requests.Response) -> EngineError:
    status = response.status_code
    name = _name(url)
    if status == 401:
        return EngineError(
            GATED,
            f"{name} needs a Hugging Face token: the repository is private or gated. "
            "Add your token in Settings and accept the model's terms on its Hub page.",
        )
    if status == 403:
        return EngineError(
            GATED,
            f"Access to {name} was refused (403): the model is gated. Accept its terms on its Hub page, "
            "and check that your token may read gated repositories.",
        )
    if status == 404:
        return EngineError(NOT_FOUND, f"{name} was not found on {_host(url)} (404).")
    if status == 429:
        return EngineError(NETWORK, f"{_host(url)} is rate limiting requests (429): try again later.")
    if status >= 500:
        return EngineError(NETWORK, f"{_host(url)} had a server error ({status}): try again later.")
    reason = f"{status} {response.reason}" if response.reason else str(status)
    return EngineError(NETWORK, f"{_host(url)} answered {reason} when asked for {name}.")


def _name(url: str) -> str:
    path = urlsplit(url).path.rstrip("/")
    return path.rsplit("/", 1)[-1] or url


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


def _reason(exc: BaseException) -> str:
    if isinstance(exc, requests.Timeout):
        return "the server did not answer in time."
    if isinstance(exc, requests.ConnectionError):
        return "the connection failed (check your internet connection)."
    return f"{type(exc).__name__}: {exc}"
