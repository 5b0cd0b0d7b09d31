"""The sidebar's privacy badge on the real window: it says what leaves the computer as the chat model and the
API server change (split from tests/test_gui_server_page.py, whose helpers it uses)."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox

from engines.workspace import open_workspace
from tests.fixtures.llama_server import free_port
from tests.test_gui_server_page import answer, switch


def test_the_sidebar_badge_says_what_leaves_the_computer_as_it_changes(qtbot, monkeypatch) -> None:
    """The real window: the badge follows the chat page's model (a remote server beyond loopback, TEST-NET, never
    reached; one on loopback) and the API server (every interface, then this computer only), and offline mode."""
    from desktop.main_window import MainWindow
    from desktop.privacy import CLICK, OFFLINE, PRIVATE, privacy_text
    from engines.network import set_offline
    from engines.remote import RemoteServer, RemoteServers

    workspace = open_workspace()
    port = free_port()
    workspace.settings.server.port = port
    workspace.save_settings()
    servers = RemoteServers.beside(workspace.models.file)
    servers.add(RemoteServer("box", "http://192.0.2.1:8000/v1", models=("qwen",)))
    servers.add(RemoteServer("here", "http://127.0.0.1:9/v1", models=("llama",)))
    monkeypatch.setattr(MainWindow, "ensure_models_page", lambda self: None)  # not needed here; only slower
    window = MainWindow(workspace)
    qtbot.addWidget(window)
    window.show()
    badge, chat, page = window.privacy_badge, window.chat_page, window.server_page
    tail = f"\n\n{privacy_text()}\n\n{CLICK}"

    def choose(model_id: str) -> None:
        chat.panel.model_combo.setCurrentIndex(chat.panel.model_combo.findData(model_id))
        assert chat.shown_model.id == model_id

    try:
        assert (badge.text(), badge.toolTip()) == (PRIVATE, f"{privacy_text()}\n\n{CLICK}")
        choose("box/qwen")
        sent = ("• Chats with 'box' are sent to http://192.0.2.1:8000/v1: your messages, the chat's earlier ones and "
                "its system prompt.")
        remote_only = ("● Chats go to the remote server 'box'", f"Right now:\n{sent}{tail}")
        assert (badge.text(), badge.toolTip()) == remote_only

        window.show_page("Server")  # its examples follow the chat page's model
        assert page.connect_tab.model_note.text().startswith("The examples use box/qwen, the chat page's model:")
        answer(monkeypatch, QMessageBox.Yes)
        page.host.setCurrentIndex(page.host.findData("0.0.0.0"))
        switch(qtbot, page, True)
        open_to_all = (f"• The API server accepts other machines on 0.0.0.0:{port}: any that can reach this one can "
                       "use your models with the token.\n"
                       "   To close it, stop the server or choose 'This computer only' on the Server page.")
        assert (badge.text(), badge.toolTip()) == ("● Chats go to 'box'; the API server accepts other machines",
                                                   f"Right now:\n{sent}\n{open_to_all}{tail}")
        choose("demo/gemma-3-270m-q4_k_m")
        assert (badge.text(), badge.toolTip()) == ("● The API server accepts other machines",
                                                   f"Right now:\n{open_to_all}{tail}")
        assert page.connect_tab.model_note.text() == "The examples use demo/gemma-3-270m-q4_k_m, the chat page's model."

        window.settings_page.offline.setChecked(True)  # offline mode opens nothing, but the server still listens
        assert (badge.text(), badge.toolTip()) == ("● Offline mode; the API server accepts other machines",
                                                   f"Right now:\n{open_to_all}{tail}")
        choose("box/qwen")
        assert badge.text() == "● Offline mode; the API server accepts other machines"
        assert badge.toolTip() == ("Right now:\n• Chats with 'box' are blocked: offline mode keeps them from "
                                   f"http://192.0.2.1:8000/v1 (not on this computer).\n{open_to_all}{tail}")
        switch(qtbot, page, False)
        assert badge.text() == OFFLINE
        window.settings_page.offline.setChecked(False)
        assert (badge.text(), badge.toolTip()) == remote_only

        page.host.setCurrentIndex(page.host.findData("127.0.0.1"))
        switch(qtbot, page, True)
        choose("here/llama")  # a "remote" server on this computer: nothing leaves it
        assert (badge.text(), badge.toolTip()) == (PRIVATE, (
            "Right now:\n• Chats with 'here' go to http://127.0.0.1:9/v1, a server on this computer: they do not "
            f"leave it.\n• The API server answers apps on this computer only (127.0.0.1:{port}).{tail}"))
    finally:
        set_offline(False)
        window.close()
