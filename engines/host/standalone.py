"""The engine host under another Python interpreter (a private engine environment).

The parent (:class:`engines.host.client.EngineHost` with ``python=...``)
listens on a ``multiprocessing.connection.Listener`` and starts::

    <python> -s -m engines.host.standalone <address> <log path>

with the listener's random authentication key written to the child's
standard input (not on the command line, which every local user can read).
The child connects twice: the first connection carries the usual protocol
(:mod:`engines.host.protocol`) and runs the same :func:`~engines.host.process.serve`
loop as the spawned host; the second is the cancel line. The parent writes a
request id there to cancel that request (and every earlier one), and a
reader thread in the child turns it into the flag the engine polls, so a
cancel never waits behind the busy generation loop. A closed cancel line
cancels everything.

This module is also where :func:`engines_source_root` lives: the folder to
put on the foreign interpreter's ``PYTHONPATH`` so it finds ``engines``.
Importing it is cheap and it never imports Qt or an engine library.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

SOURCE_ENV = "ATELIER_ENGINES_SOURCE"  # overrides where the engines/ source tree is
CANCEL_ALL = 2**62  # the request id the parent sends to cancel everything (close)


def engines_source_root() -> Path | None:
    """The folder that contains the ``engines`` package as plain files, or None.

    In a development checkout that is the repository root. A frozen app
    ships the ``engines/`` source tree as ``.py`` files (a foreign Python
    cannot import from the app's PYZ archive); the packaging puts it at
    ``<bundle>/engines-src/engines``. ``ATELIER_ENGINES_SOURCE`` overrides
    both. None when the package lives only inside a zip/PYZ.
    """
    override = os.environ.get(SOURCE_ENV)
    candidates = [Path(override)] if override else []
    import engines

    package_file = getattr(engines, "__file__", None)
    if package_file:
        candidates.append(Path(package_file).resolve().parent.parent)
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.append(Path(bundle) / "engines-src")
    for root in candidates:
        if (root / "engines" / "__init__.py").is_file() and (root / "engines" / "host" / "standalone.py").is_file():
            return root
    return None


class RequestCancels:
    """Per-request cancel flags fed by the cancel connection.

    Cancelling request *n* cancels every request up to *n*; a request that
    starts later has its own, clear flag. So a cancel can never leak into
    the next request, and a cancel that arrives before its request starts
    still counts.
    """

    def __init__(self) -> None:
        self._upto = 0
        self._changed = threading.Condition()

    def cancel(self, request_id: int) -> None:
        with self._changed:
            self._upto = max(self._upto, int(request_id))
            self._changed.notify_all()

    def flag(self, request_id: int | None) -> "_RequestFlag":
        return _RequestFlag(self, request_id or 0)

    def is_cancelled(self, request_id: int) -> bool:
        return self._upto >= request_id

    def wait(self, request_id: int, timeout: float | None = None) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._upto >= request_id, timeout)

    def listen(self, conn) -> None:
        """Read request ids from the cancel connection until it closes (then cancel all)."""
        while True:
            try:
                request_id = conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # noqa: BLE001 - a bad message must not end the line
                continue
            if isinstance(request_id, int):
                self.cancel(request_id)
        self.cancel(CANCEL_ALL)


class _RequestFlag:
    """The :class:`engines.api.CancelFlag` one request's engine polls."""

    def __init__(self, owner: RequestCancels, request_id: int) -> None:
        self._owner = owner
        self._request_id = request_id

    def is_set(self) -> bool:
        return self._owner.is_cancelled(self._request_id)

    def wait(self, timeout: float | None = None) -> bool:
        return self._owner.wait(self._request_id, timeout)


def listener_family(address: str) -> str:
    return "AF_PIPE" if address.startswith("\\\\") else "AF_UNIX"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m engines.host.standalone ADDRESS LOG_PATH  (authkey in hex on stdin)", file=sys.stderr)
        return 2
    address, log_path = argv
    authkey = bytes.fromhex(sys.stdin.readline().strip())
    from multiprocessing.connection import Client

    from engines.host.process import _redirect_output, serve

    _redirect_output(log_path)
    family = listener_family(address)
    conn = Client(address, family=family, authkey=authkey)
    cancel_conn = Client(address, family=family, authkey=authkey)
    cancels = RequestCancels()
    threading.Thread(target=cancels.listen, args=(cancel_conn,), name="cancel-line", daemon=True).start()
    try:
        serve(conn, cancels.flag, log_path)
    finally:
        conn.close()
        cancel_conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
