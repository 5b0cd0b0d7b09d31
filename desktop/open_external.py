"""Open a file or folder with the system's own apps, and say so when nothing can.

``QDesktopServices.openUrl`` fails silently on a Linux desktop without a
file manager: it returns True once ``xdg-open`` has *started*, and
``xdg-open`` then exits with an error nobody reads. So on Linux the helper
runs ``xdg-open`` itself, as a ``QProcess`` (never blocking the GUI), and
reads its exit status; elsewhere, and when there is no ``xdg-open``,
``openUrl``'s own answer decides. A failure becomes one sentence for the
caller's banner, and the path goes to the clipboard so the user can paste
it into whatever they do have.

Every page that opens or reveals files uses this module: the Models page
("Reveal in folder"), Settings (the data folders) and the gallery.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QProcess, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication

Report = Callable[[str], None]

# xdg-open's documented exit codes.
_XDG_REASONS = {
    1: "xdg-open was given a bad command line",
    2: "the file does not exist",
    3: "no app or file manager is set up to open it",
    4: "the app that should open it failed",
}
_running: set[QProcess] = set()  # kept alive until they exit


def open_path(path: str | Path, on_failure: Report) -> bool:
    """Open *path* (a file with its app, a folder in the file manager); report a failure through *on_failure*.

    Returns False when it failed at once; a failure found later (xdg-open
    exiting with an error) is reported through *on_failure* then.
    """
    target = Path(path)
    if not target.exists():
        on_failure(f"Could not open {target}: it no longer exists.")
        return False
    xdg_open = shutil.which("xdg-open") if sys.platform.startswith("linux") else None
    if xdg_open:
        return _run_xdg_open(xdg_open, target, on_failure)
    if QDesktopServices.openUrl(QUrl.fromLocalFile(str(target))):
        return True
    _fail(target, "no app or file manager is set up to open it on this system", on_failure)
    return False


def reveal_path(path: str | Path, on_failure: Report) -> bool:
    """Show *path* in the file manager: a folder itself; a file selected in its folder on macOS and Windows
    (Finder's ``open -R``, Explorer's ``/select,``), its folder elsewhere."""
    target = Path(path)
    if target.is_file() and sys.platform in ("darwin", "win32"):
        command = ["open", "-R", str(target)] if sys.platform == "darwin" else ["explorer", "/select,", str(target)]
        try:
            subprocess.Popen(command)
            return True
        except OSError:
            pass  # no Finder or Explorer to call: open the folder the portable way
    folder = target if target.is_dir() else target.parent
    return open_path(folder, on_failure)


def _run_xdg_open(program: str, target: Path, on_failure: Report) -> bool:
    process = QProcess()
    _running.add(process)

    def finished(code: int, status: QProcess.ExitStatus) -> None:
        _running.discard(process)
        if status != QProcess.ExitStatus.NormalExit:
            _fail(target, "xdg-open crashed", on_failure)
        elif code != 0:
            _fail(target, _XDG_REASONS.get(code, f"xdg-open ended with error {code}"), on_failure)
        process.deleteLater()

    def error(problem: QProcess.ProcessError) -> None:
        if problem == QProcess.ProcessError.FailedToStart:
            _running.discard(process)
            _fail(target, "xdg-open could not be started", on_failure)
            process.deleteLater()

    process.finished.connect(finished)
    process.errorOccurred.connect(error)
    process.setStandardOutputFile(QProcess.nullDevice())
    process.setStandardErrorFile(QProcess.nullDevice())
    process.start(program, [str(target)])
    return True


def _fail(target: Path, reason: str, on_failure: Report) -> None:
    copied = ""
    clipboard = QGuiApplication.clipboard()
    if clipboard is not None:
        clipboard.setText(str(target))
        copied = " Its location was copied to the clipboard."
    on_failure(f"Could not open {target}: {reason}.{copied}")
