"""The GUI's API server: started and stopped off the GUI thread, over the window's one scheduler.

Starting imports FastAPI and uvicorn and binds the port; stopping cancels
the API's generations and waits for open streams to end (up to a few
seconds). Neither may freeze the window, so both run on a pool of one
thread, which also keeps them in order (a stop pressed during a start
waits for it). The results come back as signals on the GUI thread.

The server is built on the scheduler the chat and images pages use
(``MainWindow.scheduler``), so a model loaded for chat is the one the API
answers with, never a second copy. One :class:`RequestLog` lives as long
as the page, so the log keeps the requests of earlier runs. Nothing of
the server is imported before the first start (asyncio and anyio alone
cost ~30 ms): the window opens without them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from desktop.workers.background import run_in_background, serial_pool
from engines.errors import EngineError, ErrorKind

log = logging.getLogger(__name__)
STOP_WAIT_MS = 15_000  # a start or stop in progress when the window closes: ApiServer.stop joins within 8 s
# How a web page refused by the page's server is allowed (engines.server.config.CLI_ORIGIN_HINT names the CLI's flag)
ORIGIN_HINT = ("to allow them, stop the server on Atelier's Server page, add {origin} to 'Web pages allowed' (an "
               "advanced setting: Settings, Controls) and start it again")
# ... and what a client refused for its Host header can do (the page has no list of extra names; the CLI has
# --allow-host): use an address or name the server answers to, the ones the page's URL is built from
HOST_HINT = ("connect with this machine's address or host name instead (the URL on Atelier's Server page), or "
             "serve with 'atelier serve --allow-host NAME' to add a name")


@dataclass(frozen=True)
class Binding:
    """What the user chose on the page: where to listen, and which web pages may call."""

    host: str
    port: int
    cors_origins: tuple[str, ...] = ()


def busy_port_message(binding: Binding) -> str:
    """The one sentence for a port already taken (the CLI's own names its --port flag)."""
    return (f"Port {binding.port} is already in use on this computer (by another program, or another Atelier "
            "server): choose another port and start again.")


class ServerRunner(QObject):
    """Owns the page's ApiServer. ``started(url)``, ``stopped()`` and ``failed(message)`` on the GUI thread."""

    started = Signal(str)
    stopped = Signal()
    failed = Signal(str)

    def __init__(self, workspace, scheduler, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._workspace = workspace
        self._scheduler = scheduler
        self.log = None  # engines.server.RequestLog, made at the first start
        self._pool = serial_pool("atelier-server-page")
        self._lock = threading.Lock()
        self._server = None  # set on the pool's thread, read anywhere: under the lock
        self._tasks: list = []  # the starts and stops not answered yet (dropped at shutdown)

    @property
    def server(self):
        with self._lock:
            return self._server

    @property
    def busy(self) -> bool:
        """A start or a stop is on its way."""
        return any(not task.finished for task in self._tasks)

    @property
    def running(self) -> bool:
        server = self.server
        return server is not None and server.running

    def listening(self) -> tuple[str, int] | None:
        """Where the server listens, (bind address, port), while it runs; None when it does not."""
        server = self.server
        if server is None or not server.running:
            return None
        return server.config.host, int(server.url.rsplit(":", 1)[1].split("/", 1)[0])

    def start(self, binding: Binding, token: str) -> None:
        """Start serving (off the GUI thread); ``started`` or ``failed`` says how it went."""
        self._track(run_in_background(lambda: self._start(binding, token), self.started.emit,
                                      lambda error: self.failed.emit(start_failure(binding, error)),
                                      pool=self._pool))

    def stop(self) -> None:
        """Stop serving (off the GUI thread); ``stopped`` when done."""
        self._track(run_in_background(self._stop, lambda _none: self.stopped.emit(), self._stop_failed,
                                      pool=self._pool))

    def restart(self, binding: Binding, token: str) -> None:
        """Stop, then start with new settings (a new token): in order, on the same thread."""
        self.stop()
        self.start(binding, token)

    def shutdown(self) -> None:
        """The window is closing: finish a start or stop in progress, then stop the server, here and now."""
        for task in self._tasks:
            task.cancel()  # nobody is left to tell
        if not self._pool.waitForDone(STOP_WAIT_MS):
            log.warning("the API server's start or stop did not finish in time")
        self._stop()

    def _track(self, task) -> None:
        self._tasks = [t for t in self._tasks if not t.finished] + [task]

    # ---- on the pool's thread -------------------------------------------------------

    def _start(self, binding: Binding, token: str) -> str:
        from engines.remote import RemoteServers
        from engines.server import ApiServer, ModelDirectory, RequestLog, ServerConfig

        with self._lock:
            if self._server is not None and self._server.running:
                return self._server.url
            if self.log is None:
                self.log = RequestLog()
        models = self._workspace.models
        directory = ModelDirectory(models, self._workspace.settings, remotes=RemoteServers.beside(models.file))
        config = ServerConfig(host=binding.host, port=binding.port, token=token,
                              cors_origins=tuple(binding.cors_origins), origin_hint=ORIGIN_HINT,
                              host_hint=HOST_HINT)
        server = ApiServer(self._scheduler, directory, config=config, request_log=self.log)
        server.start()  # EngineError: BUSY for a port in use, BAD_INPUT for a bad address
        with self._lock:
            self._server = server
        return server.url

    def _stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()

    # ---- back on the GUI thread ---------------------------------------------------------

    def _stop_failed(self, error) -> None:
        log.error("stopping the API server: %s", error)
        self.stopped.emit()  # whatever went wrong, the page's server is gone (_stop forgot it first)


def start_failure(binding: Binding, error) -> str:
    """Why the server did not start, in one sentence (``error``: an EngineError, or run_in_background's message)."""
    if isinstance(error, EngineError) and error.kind == ErrorKind.BUSY:
        return busy_port_message(binding)
    if isinstance(error, EngineError):
        return f"The server could not start: {error.message.rstrip('.')}."
    return f"The server could not start. {error}"
