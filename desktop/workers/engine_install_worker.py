"""Installs, repairs and removes the private image engine on a worker thread.

The work itself is :class:`engines.envs.ImageEngineEnv`'s; this is the
thread and the signals. Cancel is not a signal (it would wait behind the
running install): the GUI calls :meth:`EngineInstallWorker.cancel`, which
sets the event the installer polls and stops uv.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engines.errors import EngineError, ErrorKind


class EngineInstallWorker(QObject):
    progress = Signal(object)  # InstallProgress
    finished = Signal(object)  # EnvStatus after an install or a repair
    failed = Signal(str, str)  # kind (EngineError.kind), message for the user
    removed = Signal(int)  # bytes given back
    checked = Signal(object)  # EnvStatus after check()

    def __init__(self, env) -> None:
        super().__init__()
        self._env = env
        self._cancel = threading.Event()

    @property
    def env(self):
        return self._env

    def cancel(self) -> None:
        """Called from the GUI thread: stops uv (and everything it started) within seconds."""
        self._cancel.set()

    @Slot(object)
    def install(self, plan) -> None:
        self._run(lambda: self._env.install(plan, self.progress.emit, self._cancel), self.finished)

    @Slot(object)
    def repair(self, plan) -> None:
        self._run(lambda: self._env.repair(plan, self.progress.emit, self._cancel), self.finished)

    @Slot()
    def remove(self) -> None:
        self._run(self._env.remove, self.removed)

    @Slot()
    def check(self) -> None:
        self._run(self._env.check, self.checked)

    def _run(self, work, done_signal) -> None:
        self._cancel.clear()
        try:
            result = work()
        except EngineError as exc:
            self.failed.emit(exc.kind, exc.message)
            return
        except Exception as exc:  # a bug: say so in words, never a traceback
            self.failed.emit(ErrorKind.INTERNAL, f"The image engine install failed unexpectedly "
                                                 f"({type(exc).__name__}: {exc}).")
            return
        done_signal.emit(result)


def start_install_thread(worker: EngineInstallWorker) -> QThread:
    """Move *worker* onto a new, started thread and return the thread."""
    thread = QThread()
    thread.setObjectName("engine-install")
    worker.moveToThread(thread)
    thread.start()
    return thread
