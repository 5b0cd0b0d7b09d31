"""The engine host's own entry point, under this app's Python or another one.

The parent (:class:`engines.host.client.EngineHost`, see
:mod:`engines.host.launch`) listens on a ``multiprocessing.connection.Listener``
and starts::

    <python> -m engines.host.standalone <address> <log path> <parent pid>
    atelier --engine-host <address> <log path> <parent pid>      (the frozen app)

with the listener's random key written to standard input (not on the
command line, which every local user can read). The host connects twice:
the request line runs :func:`~engines.host.process.serve`, the cancel line
feeds :class:`~engines.host.cancel.RequestCancels` from a reader thread, so
a cancel never waits behind the busy load or generation. It dies with its
parent (:mod:`engines.host.watchdog`), watched by the pid on the command line.

A Python that cannot import the protocol (the private image engine of an
older Atelier has no msgspec) exits with
:data:`~engines.host.exits.EXIT_ANOTHER_VERSION`, which the parent turns
into "installed by another version of Atelier".

This module is also where :func:`engines_source_root` lives: the folder to
put on a Python's ``PYTHONPATH`` so it finds ``engines``. Importing it is
cheap and it never imports Qt or an engine library.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

SOURCE_ENV = "ATELIER_ENGINES_SOURCE"  # overrides where the engines/ source tree is
USAGE = "usage: python -m engines.host.standalone ADDRESS LOG_PATH [PARENT_PID]  (authkey in hex on stdin)"

__all__ = ["SOURCE_ENV", "engines_source_root", "listener_family", "main"]


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
    if len(argv) not in (2, 3) or (len(argv) == 3 and not argv[2].isdigit()):
        print(f"error: {USAGE}", file=sys.stderr)
        return 2
    address, log_path = argv[:2]
    from engines.host.watchdog import die_with_parent

    die_with_parent(int(argv[2]) if len(argv) == 3 else os.getppid())
    try:
        authkey = bytes.fromhex(sys.stdin.readline().strip())
    except ValueError:
        authkey = b""
    if not authkey:
        print("error: the engine host reads its key from standard input (started by Atelier only)", file=sys.stderr)
        return 2
    try:
        from engines.host.cancel import RequestCancels
        from engines.host.process import redirect_output, serve
    except ImportError as exc:
        if exc.name != "msgspec":
            raise
        from engines.host.exits import EXIT_ANOTHER_VERSION

        print(f"engine host: this Python ({sys.executable}) cannot speak the engine protocol: {exc}", file=sys.stderr)
        return EXIT_ANOTHER_VERSION
    from multiprocessing.connection import Client

    redirect_output(log_path)
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
