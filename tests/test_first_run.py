"""The first-run dialog: one recommended model for this machine, one click, offline alternatives, privacy."""

from __future__ import annotations

import html
import socket

import pytest

from engines.byte_sizes import format_bytes
from engines.workspace import open_workspace
from tests.fixtures.models_page import make_page  # noqa: F401  (fixture)
from tests.test_gui_models import tiny_catalog

pytestmark = pytest.mark.gui


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_dialog_offers_the_recommended_model_with_size_time_fit_and_speed(qtbot, make_page, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    page = make_page(open_workspace().library())
    qtbot.waitUntil(lambda: page.advice is not None, timeout=20000)
    dialog = page.show_welcome()
    pick = page.advice.recommended["chat"]
    entry = page.library.catalog.get(pick.entry_id)
    verdict = page.advice.verdicts[entry.id]
    assert dialog.name.text() == f"★ {entry.name}"
    facts = dialog.facts.text()
    assert "<b>Download:</b> about " in facts and "at a typical 50 Mbit/s connection (6.2 MB/s)" in facts
    assert f"<b>Speed:</b> {verdict.speed.words}" in facts
    # why, in the advisor's words: they depend on the speed measured on this machine (and on its load meanwhile)
    assert f"{verdict.label}: " in facts and f"<b>Why this one:</b> {html.escape(pick.reason)}" in facts
    assert dialog.demo_note.text().startswith("Until then, the built-in demo, Gemma 3 270M, works offline. "
                                              "It is a <b>base model</b>: it continues text")
    assert "What can connect to the internet, and when" in dialog.privacy.text()
    assert "No telemetry" in dialog.privacy.text()
    # Nothing listens on the Hub's address: the quick check says so, and offers the other ways.
    qtbot.waitUntil(lambda: dialog.offline_note.isVisible(), timeout=10000)
    assert dialog.offline_note.text().startswith("<b>This computer seems to be offline.</b> Could not reach Hugging Face")
    assert "Add a GGUF model file you already have" in dialog.offline_note.text()
    assert not dialog.download_button.isEnabled()
    dialog.close()


def test_offline_mode_says_what_to_do_instead_and_opens_no_connection(qtbot, make_page, monkeypatch):
    monkeypatch.setenv("ATELIER_OFFLINE", "1")

    def forbidden(*args, **kwargs):
        raise AssertionError("a connection was attempted in offline mode")

    page = make_page(open_workspace().library())
    qtbot.waitUntil(lambda: page.advice is not None, timeout=20000)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    dialog = page.show_welcome()
    assert dialog.offline_note.isVisible()
    assert dialog.offline_note.text().startswith("<b>Offline mode is on</b>, so Atelier downloads nothing.")
    assert "turn offline mode off in Settings" in dialog.offline_note.text()
    assert dialog.settings_button.isVisible() and not dialog.download_button.isEnabled()
    dialog.close()


def test_one_click_downloads_the_recommended_model_and_a_failure_offers_retry(qtbot, make_page, tmp_path, tiny_gguf,
                                                                              http_server, monkeypatch):
    data = tiny_gguf.read_bytes()
    monkeypatch.setenv("HF_ENDPOINT", http_server.url(""))
    http_server.add("/someone/Tiny-GGUF/resolve/main/tiny.gguf", data)
    http_server.fault("/someone/Tiny-GGUF/resolve/main/tiny.gguf", status=404)
    page = make_page(open_workspace().library(catalog=tiny_catalog(tmp_path, data)))
    qtbot.waitUntil(lambda: page.advice is not None, timeout=20000)
    dialog = page.show_welcome()
    assert dialog.name.text() == "★ Tiny Chat"
    qtbot.waitUntil(lambda: dialog.reachable is True, timeout=10000)
    assert dialog.download_button.isEnabled() and dialog.download_button.text() == f"Download ({format_bytes(len(data))})"
    dialog.download_button.click()
    qtbot.waitUntil(lambda: dialog.failure.isVisible(), timeout=15000)
    assert dialog.failure.text().startswith("The download failed: tiny.gguf was not found on the server (404)")
    assert dialog.download_button.text() == f"Retry download ({format_bytes(len(data))})"
    with qtbot.waitSignal(page.model_installed, timeout=15000):
        dialog.download_button.click()
    qtbot.waitUntil(lambda: dialog.state.text().startswith("✓"), timeout=5000)
    assert dialog.state.text() == "✓ Tiny Chat is installed. Choose it in the Chat page's model list."
    assert not dialog.failure.isVisible() and not dialog.download_button.isVisible()
    dialog.close()


def test_the_dialog_shows_once_per_profile_and_stays_reachable(qtbot, monkeypatch):
    from desktop.pages.models.first_run import show_first_run
    from desktop.main_window import MainWindow

    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    workspace = open_workspace()
    window = MainWindow(workspace)
    qtbot.addWidget(window)
    try:
        show_first_run(window)
        dialog = window.models_page.welcome
        assert dialog is not None and dialog.isVisible()
        assert open_workspace().settings.first_run_done  # remembered at once
        dialog.close()
        show_first_run(window)
        assert not dialog.isVisible()
        again = MainWindow(open_workspace())
        qtbot.addWidget(again)
        show_first_run(again)
        assert again.models_page is None or again.models_page.welcome is None
        window.models_page.choose_button.click()  # "Help me choose…" on the Models page
        assert dialog.isVisible()
        dialog.close()
        again.ensure_models_page()  # built now, so that closing the window stops its background work
        again.close()
        again.models_page.wait_idle()
    finally:
        window.close()
        window.models_page.wait_idle()
