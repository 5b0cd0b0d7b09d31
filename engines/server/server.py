"""``ApiServer``: the HTTP API in a background thread, for ``atelier serve`` and the GUI's Server page.

The whole public surface, kept small on purpose::

    server = ApiServer(scheduler, directory, config=ServerConfig(port=8080, token=token))
    server.start()        # binds (an error in words if it cannot), serves in a thread
    server.url            # "http://127.0.0.1:8080/v1", the base URL an OpenAI client takes
    server.token          # what clients send as "Authorization: Bearer ..."
    server.log.entries()  # the request log (no prompt text), newest last
    server.snapshot()     # the scheduler's loaded models and queue
    server.stop()         # cancels what is running for API clients, closes, joins

The scheduler is passed in, not owned: the GUI shares its own with the
server, so a model loaded for chat is not loaded twice. The socket is
bound here, before uvicorn starts, so a port in use is an EngineError
(``BUSY``) from :meth:`start`, not an exit inside uvicorn's thread.
"""

from __future__ import annotations

import logging
import socket
import threading

from engines.errors import EngineError, ErrorKind
from engines.server.config import ServerConfig, is_wildcard
from engines.server.directory import ModelDirectory
from engines.server.request_log import RequestLog
from engines.server.runner import ServerContext

log = logging.getLogger("atelier.server")
STOP_GRACE_S = 3  # open streams get this long to end after their generations were cancelled


class ApiServer:
    def __init__(self, scheduler, directory: ModelDirectory, *, config: ServerConfig | None = None,
                 request_log: RequestLog | None = None) -> None:
        self.config = config or ServerConfig()
        self.config.validate()
        self.log = request_log or RequestLog()
        self._scheduler = scheduler
        self._context = ServerContext(scheduler, directory)
        self._server = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._failure: BaseException | None = None

    @property
    def token(self) -> str | None:
        return self.config.token

    @property
    def url(self) -> str:
        """The base URL clients use; ``localhost`` for a wildcard bind (the server's own machine)."""
        host = "127.0.0.1" if is_wildcard(self.config.host) else self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._port or self.config.port}/v1"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self):
        return self._scheduler.snapshot()

    def start(self) -> None:
        """Bind and start serving; returns once requests are answered. Raises EngineError if it cannot."""
        if self.running:
            return
        import uvicorn

        from engines.server.app import create_app
        from engines.server.slow_clients import protocol_with_head_timeout

        sock = _bind(self.config.host, self.config.port)
        self._port = sock.getsockname()[1]
        limits = self.config.limits
        uv_config = uvicorn.Config(
            create_app(self._context, self.config, self.log),
            http=protocol_with_head_timeout(limits.header_timeout_s), lifespan="off", access_log=False,
            log_config=None, timeout_keep_alive=limits.keep_alive_s, limit_concurrency=limits.max_connections,
            h11_max_incomplete_event_size=limits.max_header_bytes, timeout_graceful_shutdown=STOP_GRACE_S,
            server_header=False, date_header=True,
        )
        self._server = uvicorn.Server(uv_config)
        self._failure = None
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="atelier-api-server", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.02)
        if not self._server.started:
            raise EngineError(ErrorKind.INTERNAL, f"The API server did not start: {self._failure or 'unknown reason'}.")

    def stop(self) -> None:
        """Cancel the API's generations, stop accepting, close connections, and wait for the thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._context.cancel_all()
        server.should_exit = True
        thread.join(STOP_GRACE_S + 5)
        self._server = self._thread = None

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._server.run(sockets=[sock])
        except BaseException as exc:  # SystemExit from uvicorn included: start() reports it
            self._failure = exc
            log.exception("the API server stopped")
        finally:
            sock.close()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or EngineError: BUSY for a port in use, BAD_INPUT for a bad address."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise EngineError(ErrorKind.BAD_INPUT, f"cannot bind to {host}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and is_wildcard(host):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise EngineError(ErrorKind.BUSY, f"port {port} on {host} is already in use; choose another with "
                              "--port") from None
        raise EngineError(ErrorKind.BAD_INPUT, f"cannot bind to {host}:{port}: {exc.strerror or exc}") from None
    return sock
