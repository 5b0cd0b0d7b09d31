"""One live connection to an MCP server, usable from plain (threaded) code.

The official ``mcp`` SDK is asyncio (anyio); Atelier's chat turn, CLI and
GUI workers are threads. So each connection runs its own event loop in a
thread (an anyio blocking portal) and one long-lived task that holds the
SDK's ``Client`` open: entered and left in that same task, as anyio's
cancel scopes require. Calls are sent into that loop and waited for.

A server is a user-installed program, so everything it can do wrong ends
as one :class:`ToolServerError` line, never a hang or a traceback:

* not installed: the spawn fails (the program is named);
* crashes on start or mid-call: the channel closes (its last stderr line is
  quoted, from a bounded tail: a server flooding stderr cannot fill memory
  or the terminal);
* hangs: every connect and call has a deadline; after a timeout the
  connection is closed (the SDK kills the process tree) and the next call
  starts it again;
* garbage on stdout, or a result that is not MCP: the SDK refuses it and the
  call fails with the reason. Its own log of each bad line is silenced
  (a flood would otherwise print thousands of tracebacks); our log gets one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

from engines.errors import EngineError, ErrorKind
from engines.tools.servers import ListedTool, ToolServer

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0  # starting a server and the MCP handshake (npx may start slowly the first time)
MAX_RESULT_CHARS = 20_000  # what a result may put in the model's context; the rest is cut, and says so
_STDERR_TAIL_BYTES = 4096
Progress = Callable[[float, float | None, str | None], None]  # (progress, total, message)

# The SDK logs every unparseable stdout line with a traceback; a flooding server would bury the terminal.
logging.getLogger("mcp").setLevel(logging.CRITICAL)


class ToolServerError(EngineError):
    """A tool server failed: one line for the chat or the CLI. The conversation goes on."""

    def __init__(self, server: str, message: str, kind: str = ErrorKind.UNAVAILABLE) -> None:
        super().__init__(kind, message)
        self.server = server

    def __reduce__(self):
        return (type(self), (self.server, self.message, str(self.kind)))


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool returned: its text for the model and the user, and whether the tool says it failed."""

    text: str
    is_error: bool = False
    structured: dict | None = None


class _StderrTail:
    """The server's stderr, read by a thread that keeps only its last few KB (for the one-line error)."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.writer = os.fdopen(write_fd, "w")
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        self._tail = b""
        self._lock = threading.Lock()
        threading.Thread(target=self._drain, name="mcp-stderr", daemon=True).start()

    def _drain(self) -> None:
        with self._reader:
            while chunk := self._reader.read(65536):
                with self._lock:
                    self._tail = (self._tail + chunk)[-_STDERR_TAIL_BYTES:]

    def last_line(self) -> str:
        with self._lock:
            lines = [line.strip() for line in self._tail.decode("utf-8", "replace").splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""

    def close(self) -> None:
        try:
            self.writer.close()
        except OSError:
            pass


class McpConnection:
    """A started server. ``list_tools`` and ``call`` connect on first use; ``close`` stops the server."""

    def __init__(self, server: ToolServer, env: dict[str, str] | None = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.server = server
        self._env = dict(env or {})
        self._connect_timeout_s = connect_timeout_s
        self._portal_cm = None
        self._portal = None
        self._client = None
        self._stop = None
        self._task = None
        self._stderr: _StderrTail | None = None
        self._lock = threading.RLock()

    # ---- public ----------------------------------------------------------

    def list_tools(self) -> list[ListedTool]:
        """Every tool the server offers (all pages), in its order."""
        async def listing(client):
            tools, cursor = [], None
            for _ in range(100):  # a paginator that never ends cannot hang us
                page = await client.list_tools(cursor=cursor)
                tools.extend(ListedTool(t.name, t.description or "", dict(t.input_schema or {})) for t in page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
            return tools
        return self._run("list its tools", listing, self._connect_timeout_s)

    def call(self, tool: str, arguments: dict, on_progress: Progress | None = None,
             timeout_s: float | None = None) -> ToolOutcome:
        """Call ``tool``; the server's own "this failed" is an outcome with ``is_error``, anything else raises."""
        async def calling(client):
            async def progress(value, total, message):
                if on_progress is not None:
                    on_progress(float(value), None if total is None else float(total), message)
            result = await client.call_tool(tool, arguments, progress_callback=progress)
            return _outcome(result)
        return self._run(f"run '{tool}'", calling, timeout_s or self.server.timeout_s)

    def close(self) -> None:
        """Stop the server (the SDK closes its stdin, then kills its process group) and the loop thread."""
        with self._lock:
            portal, portal_cm, task, stop = self._portal, self._portal_cm, self._task, self._stop
            self._portal = self._portal_cm = self._task = self._stop = self._client = None
            stderr, self._stderr = self._stderr, None
        if portal is not None:
            try:
                if stop is not None:
                    portal.call(stop.set)
                if task is not None:
                    try:
                        task.result(timeout=15)
                    except BaseException as exc:  # noqa: BLE001 - it already failed; we are closing it
                        log.info("tool server %s ended with %s", self.server.name, _flatten(exc))
            finally:
                try:
                    portal_cm.__exit__(None, None, None)
                except BaseException as exc:  # noqa: BLE001
                    log.info("closing the loop of tool server %s: %s", self.server.name, exc)
        if stderr is not None:
            stderr.close()

    def __enter__(self) -> "McpConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the loop --------------------------------------------------------

    def _run(self, doing: str, work, timeout_s: float):
        with self._lock:
            client = self._connect()
            portal = self._portal

        async def bounded():
            import anyio

            with anyio.fail_after(timeout_s):
                return await work(client)
        try:
            return portal.call(bounded)
        except BaseException as exc:  # noqa: BLE001 - a server can fail in any way; KeyboardInterrupt re-raised below
            if isinstance(exc, KeyboardInterrupt):
                self.close()
                raise
            error = self._explain(exc, doing, timeout_s)
            if _channel_broken(exc):  # a hung or dead server is stopped now and started afresh next time
                self.close()
            raise error from None

    def _connect(self):
        if self._client is not None:
            return self._client
        from anyio.from_thread import start_blocking_portal

        self._stderr = _StderrTail()
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self._task, self._client = self._portal.start_task(self._hold_open)
        except BaseException as exc:  # noqa: BLE001
            error = self._explain(exc, "start", self._connect_timeout_s, starting=True)
            self.close()
            raise error from None
        return self._client

    async def _hold_open(self, *, task_status) -> None:
        import anyio
        from mcp import Client, Implementation

        self._stop = anyio.Event()
        with anyio.CancelScope() as scope:
            scope.deadline = anyio.current_time() + self._connect_timeout_s
            async with Client(self._target(), client_info=Implementation(name="atelier", version="0.1")) as client:
                scope.deadline = math.inf
                task_status.started(client)
                await self._stop.wait()
        if scope.cancelled_caught:
            raise TimeoutError("the handshake took too long")

    def _target(self):
        if self.server.url:
            return self.server.url
        from mcp import StdioServerParameters, stdio_client

        program, *args = self.server.command
        parameters = StdioServerParameters(command=program, args=args, env=self._env or None)
        return stdio_client(parameters, errlog=self._stderr.writer)  # its stderr goes to the bounded tail

    # ---- words -----------------------------------------------------------

    def _explain(self, exc: BaseException, doing: str, timeout_s: float, starting: bool = False) -> ToolServerError:
        name = self.server.name
        cause = _flatten(exc)
        said = self._stderr.last_line() if self._stderr is not None else ""
        tail = f" It said: {said}" if said else ""
        log.info("tool server %s could not %s: %r", name, doing, cause)
        if isinstance(cause, FileNotFoundError) and not self.server.url:
            return ToolServerError(name, f"The tool server '{name}' could not start: the program "
                                   f"'{self.server.command[0]}' was not found. Is it installed, and on the PATH?", ErrorKind.BAD_INPUT)
        if isinstance(cause, PermissionError) and not self.server.url:
            return ToolServerError(name, f"The tool server '{name}' could not start: '{self.server.command[0]}' "
                                   "is not executable.", ErrorKind.BAD_INPUT)
        if isinstance(cause, TimeoutError):
            what = "start" if starting else doing
            return ToolServerError(name, f"The tool server '{name}' did not {what} within {timeout_s:g} s, so it was "
                                   f"stopped.{tail}")
        from mcp import MCPError

        if isinstance(cause, MCPError):
            message = (getattr(cause, "message", None) or str(cause)).strip()
            if "closed" in message.lower():
                when = "while starting" if starting else f"while asked to {doing}"
                return ToolServerError(name, f"The tool server '{name}' stopped {when}.{tail}")
            return ToolServerError(name, f"The tool server '{name}' refused to {doing}: {message[:300]}",
                                   ErrorKind.BAD_INPUT)
        if _is_validation_error(cause) or isinstance(cause, ValueError):
            return ToolServerError(name, f"The tool server '{name}' answered something that is not MCP when asked to "
                                   f"{doing} ({str(cause).splitlines()[0][:200]}).")
        import anyio

        if isinstance(cause, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream,
                              ConnectionError, EOFError)):
            when = "while starting" if starting else f"while asked to {doing}"
            return ToolServerError(name, f"The tool server '{name}' stopped {when}.{tail}")
        if _is_http_error(cause):
            return ToolServerError(name, f"The tool server '{name}' at {self.server.url} could not be reached: "
                                   f"{str(cause)[:200] or type(cause).__name__}.", ErrorKind.NETWORK)
        if isinstance(cause, OSError):
            return ToolServerError(name, f"The tool server '{name}' could not {doing}: {cause.strerror or cause}.")
        return ToolServerError(name, f"The tool server '{name}' failed to {doing} ({type(cause).__name__}: "
                               f"{str(cause)[:200]}).{tail}")


def _outcome(result) -> ToolOutcome:
    """A CallToolResult as text: text blocks as they are, other blocks named, structured content as JSON."""
    parts = []
    for block in result.content or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {getattr(block, 'mime_type', None) or getattr(block, 'mimeType', '')}]")
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", None) or f"[resource: {resource.uri}]")
        elif kind == "resource_link":
            parts.append(f"[link: {block.uri}]")
    structured = result.structured_content if isinstance(result.structured_content, dict) else None
    if not parts and structured is not None:
        parts.append(json.dumps(structured, ensure_ascii=False))
    text = "\n".join(parts)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"\n[cut: {len(text) - MAX_RESULT_CHARS:,} more characters]"
    return ToolOutcome(text, bool(result.is_error), structured)


def _flatten(exc: BaseException) -> BaseException:
    """The first real cause inside anyio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _channel_broken(exc: BaseException) -> bool:
    from mcp import MCPError

    cause = _flatten(exc)
    return not (isinstance(cause, MCPError) and "closed" not in str(cause).lower())


def _is_validation_error(exc: BaseException) -> bool:
    from pydantic import ValidationError

    return isinstance(exc, ValidationError)


def _is_http_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("httpx", "httpcore"))


def arguments_json(arguments: Any) -> str:
    """Arguments as they are shown and saved: compact JSON, keys in the model's order."""
    return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
