"""The engine host under another Python interpreter (a private engine environment).

The parent (:class:`engines.host.client.EngineHost` with ``python=...``)
listens on a ``multiprocessing.connection.Listener`` and starts::

    <python> -s -m engines.host.standalone <address> <log path> <parent pid>

with the listener's random authentication key written to the child's
standard input (not on the command line, which every local user can read).
The child connects twice: the first connection carries the usual protocol
(:mod:`engines.host.protocol`) and runs the same :func:`~engines.host.process.serve`
loop as the spawned host; the second is the cancel line. The parent writes a
request id there to cancel that request (and every earlier one), and a
reader thread in the child turns it into the flag the engine polls, so a
cancel never waits behind the busy load or generation
(:class:`~engines.host.cancel.RequestCancels`). A closed cancel line
cancels everything. Like the spawned host, it dies with its parent
(:mod:`engines.host.watchdog`), watched by the pid given on the command line.

This module is also where :func:`engines_source_root` lives: the folder to
put on the foreign interpreter's ``PYTHONPATH`` so it finds ``engines``.
Importing it is cheap and it never imports Qt or an engine library.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from engines.host.cancel import CANCEL_ALL, RequestCancels

SOURCE_ENV = "ATELIER_ENGINES_SOURCE"  # overrides where the engines/ source tree is

__all__ = ["CANCEL_ALL", "SOURCE_ENV", "RequestCancels", "engines_source_root", "listener_family", "main"]


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


def listener_family(address: str) -> str:
    return "AF_PIPE" if address.startswith("\\\\") else "AF_UNIX"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print("usage: python -m engines.host.standalone ADDRESS LOG_PATH [PARENT_PID]  (authkey in hex on stdin)",
              file=sys.stderr)
        return 2
    address, log_path = argv[:2]
    from engines.host.watchdog import die_with_parent

    die_with_parent(int(argv[2]) if len(argv) == 3 else os.getppid())
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
