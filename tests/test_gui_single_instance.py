"""One GUI per profile, with real processes: a second start raises the first and exits 0; a killed GUI never blocks.

Each GUI is ``python -m desktop`` with its own ATELIER_HOME, offscreen.
``ATELIER_REPORT_STARTUP`` makes a GUI print when its window is shown and
when a second start brought it to the front, which is what these tests
wait for (reading its output line by line, never a clock).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.single_instance import server_name

pytestmark = [pytest.mark.gui, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def gui_env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "ATELIER_HOME": str(home), "QT_QPA_PLATFORM": "offscreen", "ATELIER_OFFLINE": "1",
            "ATELIER_REPORT_STARTUP": "1", "PYTHONPATH": str(REPO), **extra}


def start_gui(home: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "desktop"], cwd=REPO, env=gui_env(home, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, start: str) -> str:
    """The first line of the GUI's output that starts with ``start`` (fails if the GUI ends first)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(start):
            return line
    pytest.fail(f"the GUI ended (rc {proc.wait()}) without printing {start!r}: {seen} {proc.stderr.read()[-2000:]}")


def test_a_second_start_brings_the_first_window_to_the_front_and_exits_0(tmp_path: Path) -> None:
    home = tmp_path / "profile with spaces é"
    first = start_gui(home)
    try:
        wait_for_line(first, "window shown after")
        second = subprocess.run([sys.executable, "-m", "desktop"], cwd=REPO, env=gui_env(home),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        assert second.stderr.strip().splitlines()[-1] == (
            "Atelier is already running with this profile; its window was brought to the front.")
        assert "window shown" not in second.stdout  # it opened no window, and so no chat history
        wait_for_line(first, "window brought to the front by a second start")
        other = subprocess.run([sys.executable, "-m", "desktop"], cwd=REPO,
                               env=gui_env(tmp_path / "another profile", ATELIER_QUIT_AFTER_SHOW="200"),
                               capture_output=True, text=True, timeout=300)
        assert other.returncode == 0 and "window shown after" in other.stdout  # other profiles are not affected
    finally:
        first.kill()
        first.wait()
        (Path("/tmp") / server_name(home / "data")).unlink(missing_ok=True)  # the socket a killed GUI leaves


def test_a_killed_gui_does_not_block_the_next_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_gui(home)
    wait_for_line(first, "window shown after")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    socket_file = Path("/tmp") / server_name(home / "data")
    if sys.platform.startswith("linux"):
        assert socket_file.exists()  # the socket the killed GUI left behind
    again = subprocess.run([sys.executable, "-m", "desktop"], cwd=REPO, env=gui_env(home, ATELIER_QUIT_AFTER_SHOW="200"),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "window shown after" in again.stdout and "already running" not in again.stderr
