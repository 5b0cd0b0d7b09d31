"""One GUI per profile: a second start brings the running window to the front and exits.

Two GUIs on one profile would write the same chat history, and the second
would mark the first one's live reply "interrupted" at its start. So the
GUI holds a lock for as long as it runs: ``engines.storage.try_hold`` on
``<data>/gui.lock``, which the operating system releases when the holder dies, even by kill -9, so a crashed GUI never blocks the
next start. The holder also listens on a local socket named after the
profile; a second start that cannot take the lock connects to it, asks for
the window, and exits 0. A socket file left by a killed GUI is removed by
the next holder of the lock before it listens, which is safe because only
the lock holder may own the name.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from engines.storage import try_hold

log = logging.getLogger(__name__)

SHOW_REQUEST = b"show\n"
CONNECT_PATIENCE_S = 5.0  # a first GUI that holds the lock may still be starting its server


def server_name(data_folder: Path) -> str:
    """The local socket's name: one per profile folder, short enough for any OS's socket path."""
    digest = hashlib.sha256(str(Path(data_folder).resolve()).encode("utf-8", "surrogatepass")).hexdigest()
    return f"atelier-gui-{digest[:20]}"


class SingleInstance(QObject):
    """The profile's GUI lock and its "show yourself" socket."""

    show_requested = Signal()

    def __init__(self, data_folder: Path, parent=None) -> None:
        super().__init__(parent)
        self.lock_path = Path(data_folder) / "gui.lock"
        self.name = server_name(data_folder)
        self._lock = None
        self._server: QLocalServer | None = None

    def acquire(self) -> bool:
        """Become the profile's GUI; False when another one runs."""
        self._lock = try_hold(self.lock_path)
        if self._lock is None:
            return False
        QLocalServer.removeServer(self.name)  # a socket left by a GUI that was killed
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self._server.newConnection.connect(self._accept)
        if not self._server.listen(self.name):
            log.warning("single-instance socket %s: %s", self.name, self._server.errorString())
        return True

    def ask_running_to_show(self) -> bool:
        """Ask the GUI holding the lock to show its window; True when it got the request."""
        deadline = time.monotonic() + CONNECT_PATIENCE_S
        while True:
            socket = QLocalSocket()
            socket.connectToServer(self.name)
            if socket.waitForConnected(500):
                socket.write(SHOW_REQUEST)
                sent = socket.waitForBytesWritten(2000)
                socket.disconnectFromServer()
                return sent
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _accept(self) -> None:
        while self._server is not None and self._server.hasPendingConnections():
            connection = self._server.nextPendingConnection()
            connection.readyRead.connect(lambda c=connection: self._read(c))
            connection.disconnected.connect(connection.deleteLater)

    def _read(self, connection: QLocalSocket) -> None:
        if SHOW_REQUEST.strip() in bytes(connection.readAll()):
            self.show_requested.emit()

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
