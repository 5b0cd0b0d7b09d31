"""Creating the QApplication, and saying in words why Qt could not create it.

When a system library that Qt's platform plugin links is missing (a
minimal Debian without libxcb-icccm4, say), Qt prints "From 6.5.0,
xcb-cursor0 or libxcb-cursor0 is needed to load the Qt xcb platform
plugin", which names the wrong library, then aborts. Here Qt's messages
are held while the application object is created; if Qt gives up (its
fatal message), :func:`desktop.launcher_check.check` finds which library
is really missing and names it with its Debian/Ubuntu package, instead of
Qt's text. When no library is missing (no display, say), Qt's own messages
are printed as they were, since then they are right.

The same goes for Qt's own libraries, which link system ones as well
(libEGL, fontconfig, glib): when importing PySide6 fails, the check names
what is missing.

This runs for the ``atelier`` console script of a virtualenv and for the
packaged app alike. It costs nothing when Qt starts: the library check
(``dlopen``, and ``ldd`` when that fails) runs only after Qt has failed,
which a check before every start would not (it measured 20-75 ms here).
"""

from __future__ import annotations

import os
import sys


def _as_line(context, text: str) -> str:
    """A message as Qt's default handler prints it: ``category: message``."""
    category = getattr(context, "category", None) or ""
    if isinstance(category, bytes):
        category = category.decode("utf-8", "replace")
    return f"{category}: {text}" if category and category != "default" else text


def _explain_and_exit(held: list[str]) -> None:
    """Qt cannot start: name the missing library if that is why, else repeat Qt's words; end the process."""
    explained = False
    if sys.platform.startswith("linux"):
        from desktop.launcher_check import check

        explained = check() != 0  # it printed which library (and package) is missing
    if not explained:
        for line in held:
            print(line, file=sys.stderr)
    sys.stderr.flush()
    os._exit(1)  # Qt would abort() once this handler returns; end cleanly with a plain failure instead


def create_application(argv: list[str]):
    """The QApplication (the existing one if there is one), or the end of the process with a clear reason."""
    try:
        from PySide6.QtCore import QtMsgType, qInstallMessageHandler
        from PySide6.QtWidgets import QApplication
    except ImportError as exc:  # Qt's own libraries link system ones too (libEGL, fontconfig, glib...)
        _explain_and_exit([f"Qt cannot be loaded: {exc}"])

    existing = QApplication.instance()
    if existing is not None:
        return existing
    held: list[str] = []

    def hold(kind, context, text) -> None:
        held.append(_as_line(context, text))
        if kind == QtMsgType.QtFatalMsg:
            _explain_and_exit(held)

    qInstallMessageHandler(hold)
    try:
        app = QApplication(argv)
    finally:
        qInstallMessageHandler(None)  # Qt's default handler again, for the rest of the session
    for line in held:  # warnings of a start that worked: shown, just a moment later
        print(line, file=sys.stderr, flush=True)
    return app
