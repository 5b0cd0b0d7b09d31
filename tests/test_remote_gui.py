""""Add remote server…" in Models: checked before it is saved, failures said in the dialog, models listed remote.

The server is a real one on 127.0.0.1 (tests/fixtures/openai_stub.py). The
chat page with a remote model chosen is in test_remote_llama_server.py,
through llama-cpp-python's own server.
"""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMessageBox

from engines.remote import RemoteModel, RemoteServers
from engines.workspace import open_workspace
from tests.fixtures.llama_server import free_port
from tests.fixtures.openai_stub import StubOpenAI, openai_stub  # noqa: F401  (fixture)
from tests.fixtures.waits import HANG_S

pytestmark = pytest.mark.gui
WAIT_MS = int(HANG_S * 1000)  # a hang guard (tests/fixtures/waits.py), not a speed check


@pytest.fixture
def tab(qtbot):
    from desktop.pages.models.installed_tab import InstalledTab
    from desktop.workers.background import serial_pool

    library = open_workspace().library()
    pool = serial_pool("test-installed")
    tab = InstalledTab(library, pool)
    qtbot.addWidget(tab)
    tab.resize(1100, 600)
    tab.show()
    tab.refresh()
    qtbot.waitUntil(lambda: tab.loaded, timeout=WAIT_MS)
    yield tab
    tab.shutdown()
    # Its verdicts may still be computing (the demo model is written on first use): let the pool finish
    # here, so no test's pool thread outlives it and the pool is never destroyed while busy.
    assert pool.waitForDone(WAIT_MS)


def open_dialog(tab, name: str, url: str, key: str = ""):
    tab.remote_button.click()
    dialog = tab.remote_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.name.setText(name)
    dialog.url.setText(url)
    dialog.key.setText(key)
    return dialog


def remote_rows(tab) -> list[RemoteModel]:
    return [row for row in tab.model.rows if isinstance(row, RemoteModel)]


def test_a_server_is_checked_then_its_models_join_the_list_marked_remote(qtbot, tab, openai_stub: StubOpenAI) -> None:
    openai_stub.models = ["qwen2.5-7b", "llama-3.1-8b"]
    dialog = open_dialog(tab, "box", openai_stub.base_url + "/")
    with qtbot.waitSignal(dialog.finished, timeout=WAIT_MS):
        dialog.add_button.click()
    assert tab.status.text() == (f"Added 'box' ({openai_stub.base_url}): 2 models, qwen2.5-7b, llama-3.1-8b. Use them "
                                 "as box/MODEL, e.g. box/qwen2.5-7b.")
    qtbot.waitUntil(lambda: len(remote_rows(tab)) == 2, timeout=WAIT_MS)
    row = tab.model.rows.index(remote_rows(tab)[1])  # sorted by name: llama first
    cells = [tab.model.index(row, column).data() for column in range(tab.model.columnCount())]
    assert cells == ["qwen2.5-7b · box (remote)", "—", "Remote server", "OpenAI API", "Remote server", "Runs on box",
                     openai_stub.base_url]
    assert tab.summary.text().endswith(" · 2 on remote servers")
    tab.table.selectRow(row)
    assert tab.remove_button.isEnabled() and not tab.reveal_button.isEnabled()


def test_a_server_that_is_down_is_said_in_the_dialog_and_nothing_is_saved(qtbot, tab) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    dialog = open_dialog(tab, "box", url)
    dialog.add_button.click()
    qtbot.waitUntil(lambda: dialog.message.isVisible(), timeout=WAIT_MS)
    assert dialog.message.text() == (f"Could not reach the remote server 'box' at {url}: the connection was refused "
                                     "(is the server running, and on that port?).")
    assert dialog.isVisible() and dialog.url.isEnabled() and dialog.url.text() == url  # kept, to be corrected
    assert RemoteServers.beside(open_workspace().models.file).all() == []
    dialog.reject()


def test_a_bad_name_is_refused_before_any_connection(qtbot, tab) -> None:
    dialog = open_dialog(tab, "My Box", "http://192.0.2.1:8000/v1")  # TEST-NET: never reached
    dialog.add_button.click()
    assert dialog.message.text() == ("'My Box' cannot name a remote server: use 1 to 32 lower-case letters, digits, "
                                     "'.', '_' or '-', starting with a letter or digit (e.g. box).")
    assert dialog.add_button.isEnabled()
    dialog.reject()


def test_a_key_the_server_wants_and_no_keyring_are_both_said_plainly(qtbot, tab, openai_stub: StubOpenAI) -> None:
    import keyring
    from keyring.backends import fail

    openai_stub.key = "sk-123"
    dialog = open_dialog(tab, "box", openai_stub.base_url)
    dialog.add_button.click()
    qtbot.waitUntil(lambda: dialog.message.isVisible(), timeout=WAIT_MS)
    assert dialog.message.text() == ("The remote server 'box' refused the request (401 Unauthorized: Invalid API key): "
                                     "it needs a valid API key. Add the server again with its key, or with "
                                     "--api-key-env VAR.")
    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        dialog.key.setText("sk-123")
        dialog.add_button.click()
        qtbot.waitUntil(lambda: dialog.message.text().startswith("No system keyring"), timeout=WAIT_MS)
    finally:
        keyring.set_keyring(before)
    assert dialog.message.text() == (
        "No system keyring is available here, so the key for 'box' was not saved. Keep it in an environment variable "
        "instead and add the server with --api-key-env VAR (e.g. --api-key-env BOX_KEY).")
    assert RemoteServers.beside(open_workspace().models.file).all() == []
    dialog.reject()


@pytest.mark.slow
def test_removing_a_remote_model_removes_its_server_after_asking(qtbot, tab, openai_stub, monkeypatch) -> None:
    from engines.remote.manage import add_server

    servers = RemoteServers.beside(open_workspace().models.file)
    add_server(servers, "box", openai_stub.base_url)
    tab.refresh()
    qtbot.waitUntil(lambda: len(remote_rows(tab)) == 1, timeout=WAIT_MS)
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.Yes)
    tab.table.selectRow(tab.model.rows.index(remote_rows(tab)[0]))
    tab.remove_button.click()
    assert asked == [f"Remove the remote server 'box' ({openai_stub.base_url})?\n\nIts 1 model will no longer be "
                     "offered; nothing on the server changes."]
    qtbot.waitUntil(lambda: remote_rows(tab) == [], timeout=WAIT_MS)
    assert servers.all() == [] and tab.status.text() == "Removed the remote server 'box'."
