"""The request log: who asked for what, and how it ended, never what was said.

A bounded ring buffer that the Server page shows and ``atelier serve``
prints, one line per request. Each entry has the time, the client, the
method and path, the model, the status, the duration and the token
counts; the prompt and the reply never enter it, so the log can be shown,
copied or attached to a bug report without leaking a conversation.

An entry is added when its response ends. A generation cancelled because
its client went away finishes a moment later, in the engine; its tokens
and finish reason are filled in then (:meth:`RequestLog.update`), and
:meth:`RequestLog.wait_for` lets a reader wait for that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable

log = logging.getLogger("atelier.server")


@dataclass(frozen=True)
class LogEntry:
    id: int
    time: float  # when the request arrived (epoch seconds)
    client: str  # "ip:port"
    method: str
    path: str
    status: int | None = None
    duration_s: float | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish: str | None = None  # "stop", "length", "cancelled", "error", "client went away"...

    def line(self) -> str:
        """One line for a terminal: client, request, status, model, time, tokens."""
        parts = [self.client, self.method, self.path, str(self.status or "-")]
        if self.model:
            parts.append(self.model)
        if self.duration_s is not None:
            parts.append(f"{self.duration_s:.2f} s")
        if self.prompt_tokens is not None or self.completion_tokens is not None:
            parts.append(f"{self.prompt_tokens or 0}+{self.completion_tokens or 0} tokens")
        if self.finish and self.finish != "stop":
            parts.append(self.finish)
        return "  ".join(parts)


class RequestLog:
    """The last ``capacity`` requests, safe to read and write from any thread."""

    def __init__(self, capacity: int = 500) -> None:
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self._changed = threading.Condition()
        self._next_id = 0

    def begin(self, client: str, method: str, path: str) -> "PendingEntry":
        with self._changed:
            self._next_id += 1
            return PendingEntry(self, LogEntry(self._next_id, time.time(), client, method, path))

    def _add(self, entry: LogEntry) -> None:
        with self._changed:
            self._entries.append(entry)
            self._changed.notify_all()
        log.info("%s", entry.line())

    def _update(self, entry_id: int, **fields) -> None:
        with self._changed:
            for index, entry in enumerate(self._entries):
                if entry.id == entry_id:
                    self._entries[index] = replace(entry, **fields)
                    self._changed.notify_all()
                    return

    def entries(self) -> list[LogEntry]:
        """Oldest first."""
        with self._changed:
            return list(self._entries)

    def wait_for(self, predicate: Callable[[LogEntry], bool], timeout: float) -> LogEntry | None:
        """The newest entry matching ``predicate``, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((e for e in reversed(self._entries) if predicate(e)), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                self._changed.wait(left)


class PendingEntry:
    """The entry of a request in progress: routes note the model and tokens, the response end adds it.

    A note that comes after the entry was added (the tokens of a generation
    cancelled because its client went away) updates the logged entry.
    """

    def __init__(self, log_: RequestLog, entry: LogEntry) -> None:
        self._log = log_
        self._entry = entry
        self._lock = threading.Lock()
        self._added = False
        self._started = time.monotonic()

    @property
    def id(self) -> int:
        return self._entry.id

    def note(self, **fields) -> None:
        with self._lock:
            self._entry = replace(self._entry, **fields)
            if self._added:
                self._log._update(self._entry.id, **fields)

    def finish(self, status: int | None, finish: str | None = None) -> None:
        """The response ended (or the client left, ``status`` None): add the entry once."""
        with self._lock:
            if self._added:
                return
            fields = {"status": status, "duration_s": time.monotonic() - self._started}
            if finish and not self._entry.finish:
                fields["finish"] = finish
            self._entry = replace(self._entry, **fields)
            self._added = True
            self._log._add(self._entry)


class LogRequests:
    """ASGI middleware, outermost: one entry per request, refused ones (403, 401, 413) included.

    Routes reach the entry as ``request.state.log_entry`` to note the model
    and the tokens. A response that never ended (the client went away
    mid-stream) is logged as such.
    """

    def __init__(self, app, request_log: RequestLog) -> None:
        self._app = app
        self._log = request_log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        host, port = scope.get("client") or ("?", 0)
        pending = self._log.begin(f"{host}:{port}", scope.get("method", "?"), scope.get("path", "?"))
        scope.setdefault("state", {})["log_entry"] = pending
        status = None
        ended = False

        async def sending(message) -> None:
            nonlocal status, ended
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                ended = True
                pending.finish(status)

        try:
            await self._app(scope, receive, sending)
        finally:
            if not ended:
                pending.finish(status, "client went away" if status is not None else "error")
