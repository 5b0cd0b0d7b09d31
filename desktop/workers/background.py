"""Run a function on a pool thread and get its result back on the GUI thread.

    task = run_in_background(lambda: library.scan_models_folder(), on_done=show, on_error=banner)

``on_done(result)`` and ``on_error(error)`` are always called on the GUI
thread (the thread that called :func:`run_in_background`), through queued
signals. ``error`` is the :class:`EngineError` the function raised, or a
plain message for anything else (the traceback goes to the log, never to
the user). ``task.cancel()`` drops the callbacks (the function itself runs
to its end: Python threads cannot be interrupted), which is what a page
does when it goes away or when a newer request makes the result useless.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Qt, QTimer, Signal, Slot

from engines.errors import EngineError

log = logging.getLogger(__name__)

_in_flight: set["BackgroundTask"] = set()  # keeps relays alive until they deliver


class _Signals(QObject):
    done = Signal(object)
    failed = Signal(object)


class BackgroundTask(QObject):
    """The GUI-thread side of one background call: receives the result and calls back."""

    def __init__(self, on_done: Callable[[Any], None] | None, on_error: Callable[[Any], None] | None) -> None:
        super().__init__()
        self._on_done = on_done
        self._on_error = on_error
        self.cancelled = False
        self.finished = False
        self.signals = _Signals()
        self.signals.done.connect(self._deliver_done, Qt.QueuedConnection)
        self.signals.failed.connect(self._deliver_error, Qt.QueuedConnection)

    def cancel(self) -> None:
        """Forget the callbacks; the result, when it comes, is thrown away."""
        self.cancelled = True

    @Slot(object)
    def _deliver_done(self, result: Any) -> None:
        self._finish()
        if not self.cancelled and self._on_done is not None:
            self._on_done(result)

    @Slot(object)
    def _deliver_error(self, error: Any) -> None:
        self._finish()
        if self.cancelled:
            return
        if self._on_error is not None:
            self._on_error(error)
        else:
            log.error("background task failed: %s", error)

    def _finish(self) -> None:
        self.finished = True
        # Forget it only after this slot has returned: dropping the last reference here would destroy
        # the QObject inside its own event delivery, which crashes PySide (a use-after-free).
        QTimer.singleShot(0, lambda: _in_flight.discard(self))


class _Runnable(QRunnable):
    def __init__(self, fn: Callable[[], Any], signals: _Signals) -> None:
        super().__init__()
        self.fn = fn
        self.signals = signals
        self.setAutoDelete(True)

    def run(self) -> None:  # on a pool thread
        try:
            result = self.fn()
        except EngineError as exc:
            self._emit(self.signals.failed, exc)
        except Exception as exc:  # noqa: BLE001 - reported as a message, logged with its traceback
            log.exception("background task failed")
            self._emit(self.signals.failed, f"Something went wrong: {type(exc).__name__}: {exc}")
        else:
            self._emit(self.signals.done, result)

    @staticmethod
    def _emit(signal, value) -> None:
        try:
            signal.emit(value)
        except RuntimeError:  # the receiver was deleted (the app is quitting): nobody is waiting
            pass


def run_in_background(
    fn: Callable[[], Any],
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[Any], None] | None = None,
    *,
    pool: QThreadPool | None = None,
) -> BackgroundTask:
    """Run ``fn()`` on *pool* (the global pool by default); call back on this thread."""
    task = BackgroundTask(on_done, on_error)
    _in_flight.add(task)
    (pool or QThreadPool.globalInstance()).start(_Runnable(fn, task.signals))
    return task


def serial_pool(name: str) -> QThreadPool:
    """A pool of one thread: work that must not overlap (reading the same files) queues up."""
    pool = QThreadPool()
    pool.setObjectName(name)
    pool.setMaxThreadCount(1)
    return pool


def wait_for_background(timeout_ms: int = 10_000, pool: QThreadPool | None = None) -> bool:
    """Block until the pool is idle (tests, and shutdown); True when it is."""
    return (pool or QThreadPool.globalInstance()).waitForDone(timeout_ms)
