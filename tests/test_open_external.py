"""Open and Reveal say so when nothing can open the file, instead of failing silently."""

from __future__ import annotations

import os
import stat
import sys

import pytest
from PySide6.QtGui import QDesktopServices, QGuiApplication

from desktop import open_external
from desktop.open_external import open_path, reveal_path

pytestmark = [pytest.mark.gui, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="xdg-open is Linux's")]


def fake_xdg_open(folder, exit_code: int):
    """An xdg-open that records what it was asked to open and exits with *exit_code*, as the real one does."""
    script = folder / "xdg-open"
    log = folder / "opened.txt"
    script.write_text(f'#!/bin/sh\necho "$1" >> "{log}"\nexit {exit_code}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return log


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}/usr/bin{os.pathsep}/bin")
    return folder


def test_a_file_manager_that_is_missing_is_named_and_the_path_copied(qtbot, bin_dir, tmp_path):
    """xdg-open exits with 3 when no app or file manager is set up (a bare desktop, a server)."""
    fake_xdg_open(bin_dir, 3)
    model = tmp_path / "models" / "qwen.gguf"
    model.parent.mkdir()
    model.write_bytes(b"GGUF")
    messages = []
    assert reveal_path(model, messages.append)
    qtbot.waitUntil(lambda: bool(messages), timeout=10000)
    assert messages == [f"Could not open {model.parent}: no app or file manager is set up to open it. "
                        "Its location was copied to the clipboard."]
    assert QGuiApplication.clipboard().text() == str(model.parent)


def test_a_working_xdg_open_reports_nothing(qtbot, bin_dir, tmp_path):
    log = fake_xdg_open(bin_dir, 0)
    messages = []
    assert open_path(tmp_path, messages.append)
    qtbot.waitUntil(lambda: not open_external._running, timeout=10000)  # xdg-open ended and was heard
    assert log.read_text().strip() == str(tmp_path) and messages == []


def test_without_xdg_open_qt_decides_and_a_refusal_is_reported(bin_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: False)  # what Qt answers with no handler
    messages = []
    assert not open_path(tmp_path, messages.append)
    assert messages == [f"Could not open {tmp_path}: no app or file manager is set up to open it on this system. "
                        "Its location was copied to the clipboard."]


def test_a_path_that_is_gone_is_named(bin_dir, tmp_path):
    messages = []
    assert not open_path(tmp_path / "deleted.png", messages.append)
    assert messages == [f"Could not open {tmp_path / 'deleted.png'}: it no longer exists."]
