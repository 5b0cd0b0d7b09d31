"""Offline mode: with ATELIER_OFFLINE=1 the app opens no network connection at all.

Sockets are blocked for the whole test, so any connection attempt fails the
test instead of quietly timing out.
"""

import socket

import pytest

from engines.network import OfflineError


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_library_hub_and_downloads_refuse_cleanly(no_network):
    from engines.library.hub_search import list_gguf_files, search_gguf
    from engines.library.remote_gguf import read_remote_gguf_header
    from engines.workspace import open_workspace

    library = open_workspace().library()
    entry = library.catalog.get("qwen2.5-0.5b-instruct-q4_k_m")
    assert library.verdict_for_entry(entry).label  # verdicts need no network
    for call in (
        lambda: library.pull(entry.id),
        lambda: search_gguf("qwen"),
        lambda: list_gguf_files("Qwen/Qwen2.5-0.5B-Instruct-GGUF"),
        lambda: read_remote_gguf_header(entry.url(entry.files[0])),
    ):
        with pytest.raises(OfflineError):
            call()
    library.shutdown()
    assert no_network == []


@pytest.mark.slow
def test_the_window_and_a_chat_work_offline(qtbot, no_network, tiny_gguf):
    from desktop.main_window import MainWindow
    from engines.api import ChatMessage, FinishedEvent, SamplingParams, TextLoadSpec, TextRequest
    from engines.host import EngineHost
    from engines.workspace import open_workspace

    workspace = open_workspace()
    window = MainWindow(workspace)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.models_page is not None, timeout=5000)
    window.show_page("Models")
    qtbot.wait(200)
    host = EngineHost(workspace.engine_log("offline"))
    try:
        host.load("llama_cpp", TextLoadSpec(str(tiny_gguf), context_length=256, threads=1))
        events = list(host.generate(TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=4))))
        assert isinstance(events[-1], FinishedEvent)
    finally:
        host.close()
        window.close()
    assert no_network == []
