"""The engine host dies with its parent, on every OS.

When the GUI or the CLI is killed (SIGKILL, SIGTERM, a crash), nobody sends
the host a Shutdown. A host that is idle notices: its connection reaches
EOF. A host that is busy does not: it may be blocked in ``open()``, deep inside
llama.cpp, or spinning in a hostile chat template, and it would be left
behind for ever, holding gigabytes and a CPU core. So the host protects
itself twice, from its first instant:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills it when
  the parent goes, whatever its threads are doing, even in native code
  that holds the GIL;
- on every OS, a daemon thread that waits for the parent to go (a pidfd,
  a process handle on Windows, or a poll of the parent pid) and then ends
  the process with ``os._exit``, which needs no lock that the stuck main
  thread may hold.

One caveat of PR_SET_PDEATHSIG: it fires when the parent *thread* that
started the host ends, not only the process. Start hosts from threads
that live as long as the host (the main thread, a worker's QThread).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

EXIT_PARENT_GONE = 75  # EX_TEMPFAIL; nobody is left to read it
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.5


def die_with_parent(parent_pid: int) -> None:
    """Make this process end as soon as ``parent_pid`` does."""
    _set_parent_death_signal()
    if not _parent_alive(parent_pid):  # it went before the signal was armed
        _exit_now()
    threading.Thread(target=_watch, args=(parent_pid,), name="parent-watchdog", daemon=True).start()


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (an odd libc): the watchdog thread still works
        pass


def _parent_alive(parent_pid: int) -> bool:
    if sys.platform == "win32":
        return True  # the watchdog's process handle answers this
    return os.getppid() == parent_pid  # a dead parent's children are re-parented


def _watch(parent_pid: int) -> None:
    try:
        _wait_for_pid(parent_pid)
    except Exception:  # noqa: BLE001 - a watchdog that cannot wait falls back to polling
        while _parent_alive(parent_pid):
            time.sleep(_POLL_S)
    _exit_now()


def _wait_for_pid(parent_pid: int) -> None:
    if sys.platform == "win32":
        import _winapi

        synchronize = 0x00100000
        try:
            handle = _winapi.OpenProcess(synchronize, False, parent_pid)
        except OSError:
            return  # already gone
        _winapi.WaitForSingleObject(handle, _winapi.INFINITE)
        return
    if hasattr(os, "pidfd_open"):
        import select

        try:
            pidfd = os.pidfd_open(parent_pid)
        except OSError:
            return  # already gone
        if _parent_alive(parent_pid):  # the pid was not reused between the check and the open
            select.select([pidfd], [], [])
        return
    while _parent_alive(parent_pid):
        time.sleep(_POLL_S)


def _exit_now() -> None:
    try:
        os.write(2, b"engine host: the parent process is gone; exiting\n")
    except OSError:
        pass
    os._exit(EXIT_PARENT_GONE)
