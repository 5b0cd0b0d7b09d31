"""The Server page under pytest-qt: a real API server on 127.0.0.1, driven by its buttons and by the `openai` client.

Every button of the page is pressed (questions answered through
QMessageBox.question); pytest-qt fails a test on any exception raised in
a slot. The end-to-end test runs the real window: the chat page and the
`openai` client talk to one llama.cpp host on the tiny GGUF, through the
window's one scheduler.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import threading
import time

import httpx2 as httpx
import openai
import pytest
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QLineEdit, QMessageBox

from engines.library.installed import InstalledModel
from engines.server.token import token_file
from engines.settings import LoadPrefs
from engines.workspace import open_workspace
from tests.fixtures.llama_server import free_port
from tests.fixtures.openai_stub import openai_stub  # noqa: F401  (fixture)
from tests.fixtures.waits import HANG_S

pytestmark = pytest.mark.gui
WAIT_MS = int(HANG_S * 1000)  # a hang guard (tests/fixtures/waits.py), not a speed check


@pytest.fixture
def page(qtbot):
    from desktop.pages.server_page import ServerPage

    workspace = open_workspace()
    scheduler = workspace.scheduler()
    page = ServerPage(workspace, scheduler)
    qtbot.addWidget(page)
    page.port.setValue(free_port())
    page.resize(1100, 760)
    page.show()
    yield page
    page.shutdown()
    scheduler.shutdown()


def answer(monkeypatch, reply) -> list[str]:
    """Answer every QMessageBox.question with ``reply``; the questions asked, in order."""
    asked: list[str] = []

    def question(_parent, _title, text, *args, **kwargs):
        asked.append(text)
        return reply

    monkeypatch.setattr(QMessageBox, "question", question)
    return asked


def switch(qtbot, page, on: bool) -> None:
    with qtbot.waitSignal(page.running_changed, timeout=WAIT_MS) as changed:
        page.switch.click()
    assert changed.args == [on], page.banner.text()


def saved_server_prefs():
    return open_workspace().settings.server


def refused(url: str) -> bool:
    try:
        httpx.get(url + "/models", timeout=10)
    except httpx.ConnectError:
        return True
    return False


def test_the_switch_serves_the_models_logs_each_request_and_is_remembered(qtbot, page) -> None:
    port = page.port.value()
    url = f"http://127.0.0.1:{port}/v1"
    assert (page.state, page.status.text(), page.switch.text(), page.url.text()) == ("stopped", "Off", "Start server",
                                                                                     url)
    switch(qtbot, page, True)
    assert (page.state, page.status.text(), page.switch.text()) == ("running", f"On at {url}", "Stop server")
    assert page.switch.isChecked() and not page.port.isEnabled() and not page.host.isEnabled()
    assert page.note.text() == "Stop the server to change where it listens or which web pages may call it."
    assert saved_server_prefs().enabled and saved_server_prefs().port == port

    client = openai.OpenAI(base_url=page.url.text(), api_key=page.runner.server.token)
    assert [model.id for model in client.models.list()] == ["demo/gemma-3-270m-q4_k_m"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong").models.list()
    qtbot.waitUntil(lambda: (page.refresh(), len(page.activity.log_table.rows) == 2)[1], timeout=WAIT_MS)
    log = page.activity.log_table
    newest, oldest = (log.rows[0][1], log.rows[1][1])
    assert newest[2:6] == ("GET", "/v1/models", "", "401") and oldest[2:6] == ("GET", "/v1/models", "", "200")
    assert oldest[1].startswith("127.0.0.1:") and oldest[6].endswith(" s") and oldest[7] == ""
    assert re.fullmatch(r"\d\d:\d\d:\d\d", newest[0])  # the local time it came
    assert page.activity.tabText(0) == "Requests (2)"

    switch(qtbot, page, False)
    assert (page.state, page.status.text(), page.switch.text()) == ("stopped", "Off", "Start server")
    assert refused(url) and page.port.isEnabled() and page.note.text() == ""
    assert not saved_server_prefs().enabled
    switch(qtbot, page, True)  # on again: the log keeps the earlier run's requests
    page.refresh()
    assert len(page.activity.log_table.rows) == 2


def test_a_port_in_use_is_said_in_one_sentence_and_the_switch_stays_off(qtbot, page) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", page.port.value()))
        taken.listen(1)
        with qtbot.waitSignal(page.running_changed, timeout=WAIT_MS) as changed:
            page.switch.click()
    assert changed.args == [False]
    assert page.banner.text() == (f"Port {page.port.value()} is already in use on this computer (by another program, "
                                  "or another Atelier server): choose another port and start again.")
    assert (page.state, page.switch.isChecked(), page.switch.text()) == ("stopped", False, "Start server")
    assert page.port.isEnabled() and not saved_server_prefs().enabled
    switch(qtbot, page, True)  # the port is free now: the same switch starts it
    assert page.banner.isHidden()


def test_the_token_is_hidden_until_shown_and_every_copy_button_copies_the_real_thing(qtbot, page) -> None:
    from desktop.pages.server.snippets import MASK

    token = (token_file(open_workspace().paths.config)).read_text().strip()
    clipboard = QGuiApplication.clipboard()
    assert page.token.echoMode() == QLineEdit.Password and page.token.text() == token
    assert page.token_note.text() == (f"Kept in {token_file(open_workspace().paths.config)}, readable by you only; "
                                      "'atelier serve' uses the same token.")
    python, curl = page.connect_tab.python_code.toPlainText(), page.connect_tab.curl_code.toPlainText()
    assert token not in python + curl
    assert f'api_key="{MASK}"' in python and f"Authorization: Bearer {MASK}" in curl
    assert f'base_url="{page.url.text()}"' in python and 'model="demo/gemma-3-270m-q4_k_m"' in python

    page.show_token_button.click()
    assert page.token.echoMode() == QLineEdit.Normal and page.show_token_button.text() == "Hide"
    assert f'api_key="{token}"' in page.connect_tab.python_code.toPlainText()
    page.show_token_button.click()
    assert page.token.echoMode() == QLineEdit.Password and page.show_token_button.text() == "Show"
    assert token not in page.connect_tab.python_code.toPlainText()

    page.copy_url_button.click()
    assert (clipboard.text(), page.notice.text()) == (page.url.text(), "The URL was copied.")
    page.copy_token_button.click()
    assert (clipboard.text(), page.notice.text()) == (token, "The token was copied.")
    page.connect_tab.copy_python_button.click()
    assert f'api_key="{token}"' in clipboard.text() and page.notice.text() == "Copied, with the token."
    page.connect_tab.copy_curl_button.click()
    assert shlex.split(clipboard.text().replace("\\\n", ""))[:4] == [
        "curl", page.url.text() + "/chat/completions", "-H", f"Authorization: Bearer {token}"]


def test_regenerating_the_token_asks_restarts_the_server_and_refuses_the_old_one(qtbot, page, monkeypatch) -> None:
    switch(qtbot, page, True)
    old = page.runner.server.token
    asked = answer(monkeypatch, QMessageBox.No)
    page.regenerate_button.click()
    assert asked == ["Make a new API token?\n\nApps that use the current token are refused until they are given the "
                     "new one. The server restarts to use it: requests in progress are stopped."]
    assert page.runner.server.token == old  # No: nothing changed

    answer(monkeypatch, QMessageBox.Yes)
    with qtbot.waitSignal(page.running_changed, timeout=WAIT_MS) as changed:
        page.regenerate_button.click()
        assert page.status.text() == "Starting…"
    assert changed.args == [True] and page.state == "running"
    new = page.runner.server.token
    assert new != old and page.token.text() == new
    assert (token_file(open_workspace().paths.config)).read_text().strip() == new
    assert page.notice.text() == "A new token was made: the server restarts with it."
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=page.url.text(), api_key=old).models.list()
    assert len(openai.OpenAI(base_url=page.url.text(), api_key=new).models.list().data) == 1


def test_a_token_from_the_environment_cannot_be_regenerated_here(qtbot, monkeypatch) -> None:
    from desktop.pages.server_page import ServerPage

    monkeypatch.setenv("ATELIER_API_KEY", "sk-from-env")
    workspace = open_workspace()
    page = ServerPage(workspace, workspace.scheduler())
    qtbot.addWidget(page)
    page.show()
    assert page.token.text() == "sk-from-env" and not page.regenerate_button.isEnabled()
    assert page.token_note.text() == ("From $ATELIER_API_KEY, set where Atelier was started; it wins over the saved "
                                      "token, so it cannot be regenerated here.")
    page.shutdown()


def test_an_unusable_token_in_the_environment_is_said_and_nothing_starts(qtbot, monkeypatch) -> None:
    from desktop.pages.server_page import ServerPage

    monkeypatch.setenv("ATELIER_API_KEY", "two words")
    workspace = open_workspace()
    page = ServerPage(workspace, workspace.scheduler())
    qtbot.addWidget(page)
    page.show()
    said = ("The API token cannot be used: $ATELIER_API_KEY must be at least 8 printable characters without "
            "spaces.")
    assert page.token_note.text() == said and page.token.text() == "" and not page.regenerate_button.isEnabled()
    page.switch.click()
    assert page.banner.text() == said
    assert page.state == "stopped" and not page.switch.isChecked() and page.runner.server is None
    page.shutdown()


def test_every_network_interface_is_asked_first_then_warned_and_remembered(qtbot, page, monkeypatch) -> None:
    asked = answer(monkeypatch, QMessageBox.No)
    page.host.setCurrentIndex(page.host.findData("0.0.0.0"))
    assert asked[0].startswith("Listen on every network interface?")
    assert page.host.currentData() == "127.0.0.1" and page.network_banner.isHidden()
    assert saved_server_prefs().host == "127.0.0.1"

    answer(monkeypatch, QMessageBox.Yes)
    page.host.setCurrentIndex(page.host.findData("0.0.0.0"))
    assert page.host.currentData() == "0.0.0.0" and not page.network_banner.isHidden()
    assert page.network_banner.text() == (
        "Listening on 0.0.0.0: every machine that can reach this one can use the API with the token; keep the token "
        "secret, and prefer 127.0.0.1 unless you need the network. The token is always required.")
    assert page.url.text() == f"http://127.0.0.1:{page.port.value()}/v1"  # how this machine reaches it
    assert saved_server_prefs().host == "0.0.0.0"
    page.host.setCurrentIndex(page.host.findData("127.0.0.1"))  # no question to go back to safety
    assert page.network_banner.isHidden() and saved_server_prefs().host == "127.0.0.1"


def test_web_page_origins_are_checked_saved_and_served(qtbot, page) -> None:
    page.origins.setText("*")
    page.origins.editingFinished.emit()
    assert page.banner.text() == ("A wildcard would let any web page use the API: name each web page's origin "
                                  "exactly, e.g. http://localhost:3000.")
    page.origins.setText("localhost:3000")
    page.origins.editingFinished.emit()
    assert page.banner.text() == ("'localhost:3000' is not an origin; write it as scheme://host[:port], e.g. "
                                  "http://localhost:3000.")
    page.switch.click()  # a bad origin: said, nothing started
    assert page.state == "stopped" and not page.switch.isChecked() and page.runner.server is None

    page.origins.setText("http://localhost:3000, https://app.example  http://localhost:3000")
    page.origins.editingFinished.emit()
    assert page.banner.isHidden()
    assert saved_server_prefs().cors_origins == ["http://localhost:3000", "https://app.example"]
    switch(qtbot, page, True)
    token = page.runner.server.token
    allowed = httpx.get(page.url.text() + "/models", headers={"Authorization": f"Bearer {token}",
                                                              "Origin": "https://app.example"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.get(page.url.text() + "/models", headers={"Authorization": f"Bearer {token}",
                                                            "Origin": "https://evil.example"})
    assert other.status_code == 403
    # the page's own setting, not `atelier serve`'s --cors-origin (test_server_cli.py checks that wording)
    assert other.json()["error"]["message"] == (
        "Requests from web pages at https://evil.example are not allowed; to allow them, stop the server on "
        "Atelier's Server page, add https://evil.example to 'Web pages allowed' (an advanced setting: Settings, "
        "Controls) and start it again.")
    rebound = httpx.get(page.url.text() + "/models", headers={"Authorization": f"Bearer {token}",
                                                              "Host": "attacker.example"})
    assert rebound.status_code == 403  # DNS rebinding: the page's words, not the CLI's --allow-host alone
    assert rebound.json()["error"]["message"] == (
        "Host 'attacker.example' is not allowed. This server answers to localhost and the names it was started "
        "for; connect with this machine's address or host name instead (the URL on Atelier's Server page), or "
        "serve with 'atelier serve --allow-host NAME' to add a name.")


def test_the_server_comes_back_with_the_app_only_if_it_was_left_on(qtbot) -> None:
    from desktop.pages.server_page import ServerPage

    def build():
        workspace = open_workspace()
        page = ServerPage(workspace, workspace.scheduler())
        qtbot.addWidget(page)
        page.show()
        return page

    workspace = open_workspace()
    workspace.settings.server.port = free_port()
    workspace.save_settings()
    off = build()
    qtbot.wait(50)  # the start-with-app timer would have fired by now
    assert off.state == "stopped" and off.runner.server is None and not off.runner.busy
    off.shutdown()

    workspace.settings.server.enabled = True
    workspace.save_settings()
    on = None
    try:
        on = build()
        qtbot.waitUntil(lambda: on.state == "running", timeout=WAIT_MS)
        assert on.switch.isChecked() and not refused(on.url.text())
        with socket.socket() as taken:  # the next start finds the port taken
            on.shutdown()
            taken.bind(("127.0.0.1", workspace.settings.server.port))
            taken.listen(1)
            again = build()
            qtbot.waitUntil(lambda: again.banner.isVisible(), timeout=WAIT_MS)
        assert again.banner.text() == (
            "The server was on when Atelier last closed, but it did not start again. Port "
            f"{workspace.settings.server.port} is already in use on this computer (by another program, or another "
            "Atelier server): choose another port and start again.")
        assert again.state == "stopped" and saved_server_prefs().enabled  # tried again at the next start
        again.shutdown()
    finally:
        if on is not None:
            on.shutdown()


def test_a_busy_model_is_in_the_queue_and_unloading_it_asks_first_then_stops_the_request(qtbot, page, monkeypatch,
                                                                                          openai_stub) -> None:
    """A remote model held mid-reply by its server (tests/fixtures/openai_stub.py) is busy for as long as the test
    wants: the queue shows who runs on it, and Unload asks before it stops that request."""
    from engines.remote import RemoteServer, RemoteServers

    openai_stub.chat_mode = "hold"
    RemoteServers.beside(page.workspace.models.file).add(RemoteServer("box", openai_stub.base_url, models=("stub",)))
    switch(qtbot, page, True)
    client = openai.OpenAI(base_url=page.url.text(), api_key=page.runner.server.token, max_retries=0)
    outcome: list = []

    def chat() -> None:
        try:
            stream = client.chat.completions.create(model="box/stub", stream=True,
                                                    messages=[{"role": "user", "content": "hi"}])
            outcome.append("".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))
        except openai.APIError as exc:
            outcome.append(exc)

    asking = threading.Thread(target=chat)
    asking.start()
    try:
        assert openai_stub.first_sent.wait(HANG_S)
        qtbot.waitUntil(lambda: (page.refresh(), len(page.activity.queue_table.rows) == 1)[1], timeout=WAIT_MS)
        assert page.activity.queue_table.rows[0][1][:3] == ("API 127.0.0.1", "box/stub", "Running")
        assert page.activity.tabText(2) == "Queue (1)"
        assert [row[1][:5] for row in page.activity.loaded_table.rows] == [
            ("box/stub", "Chat (remote)", "Working", "on the server", "—")]

        page.activity.loaded_view.selectRow(0)
        asked = answer(monkeypatch, QMessageBox.No)
        page.activity.unload_button.click()
        assert asked == ["box/stub is answering a request now. Unload it anyway?\n\nThe request stops; whoever "
                         "sent it is told so."]
        assert len(page.scheduler.snapshot().loaded) == 1 and asking.is_alive()  # No: nothing stopped

        answer(monkeypatch, QMessageBox.Yes)
        page.activity.unload_button.click()
        assert page.notice.text() == ("Unloading box/stub: its memory goes back to the system. It loads again on its "
                                      "next request.")
        asking.join(HANG_S)
        assert not asking.is_alive() and len(outcome) == 1
        qtbot.waitUntil(lambda: not page.scheduler.snapshot().loaded, timeout=WAIT_MS)
        qtbot.waitUntil(lambda: (page.refresh(), page.activity.log_table.rows != [])[1], timeout=WAIT_MS)
        assert page.activity.queue_table.rows == [] and page.activity.loaded_table.rows == []
        assert page.activity.log_table.rows[0][1][2:6] == ("POST", "/v1/chat/completions", "box/stub",
                                                            "200 · cancelled")
        assert isinstance(outcome[0], openai.APIError)  # told in the stream, after what the server had sent
        assert outcome[0].message == "The generation was cancelled."
    finally:
        openai_stub.release.set()
        asking.join(HANG_S)


def test_a_refresh_where_nothing_changed_repaints_nothing(qtbot) -> None:
    """The tables are refreshed every second: a repeat changes nothing, a new request is one row inserted."""
    from desktop.pages.server.tables import LoadedModelsTable, QueueTable, RequestLogTable
    from engines.scheduler.state import LoadedModel, QueuedWork, SchedulerState
    from engines.server.request_log import RequestLog

    log = RequestLog()
    for index in range(500):
        pending = log.begin(f"127.0.0.1:{40000 + index}", "POST", "/v1/chat/completions")
        pending.note(model="local/tiny", prompt_tokens=12, completion_tokens=30)
        pending.finish(200)
    loaded = tuple(LoadedModel("llama_cpp", f"spec{i}", f"m{i}.gguf", "idle", 100 + i, None, 2 ** 30, None, 5.0,
                               False, ("chat page",)) for i in range(3))
    queued = tuple(QueuedWork(i, f"api:10.0.0.{i}", "llama_cpp", "m0.gguf", "queued", 1.0) for i in range(20))
    state = SchedulerState(loaded, queued, (), 2, 1, 16)
    tables = (RequestLogTable(), LoadedModelsTable(lambda engine, spec: f"local/{spec}"), QueueTable(str))
    inputs = (log.entries(), state.loaded, state)
    signals: list[str] = []
    for table in tables:
        table.modelReset.connect(lambda: signals.append("reset"))
        table.dataChanged.connect(lambda *_: signals.append("changed"))
        table.rowsInserted.connect(lambda _parent, first, last: signals.append(f"inserted {first}-{last}"))
        table.rowsRemoved.connect(lambda _parent, first, last: signals.append(f"removed {first}-{last}"))
    assert [table.update(given) for table, given in zip(tables, inputs)] == [True, True, True]
    assert signals == ["reset"] * 3
    signals.clear()
    started = time.perf_counter()
    assert [table.update(given) for table, given in zip(tables, inputs)] == [False, False, False]
    unchanged_s = time.perf_counter() - started
    assert signals == []
    pending = log.begin("127.0.0.1:1", "GET", "/v1/models")
    pending.finish(200)
    started = time.perf_counter()
    assert tables[0].update(log.entries())
    added_s = time.perf_counter() - started
    # the log is full (500): the oldest request leaves at the bottom, the new one comes in on top, nothing reset
    assert signals == ["removed 499-499", "inserted 0-0"] and tables[0].rows[0][1][2:4] == ("GET", "/v1/models")
    assert [row[0] for row in tables[0].rows] == [entry.id for entry in reversed(log.entries())]
    assert tables[0].rows[1][1][4:] == ("local/tiny", "200", tables[0].rows[1][1][6], "12 + 30")
    assert [row[1][0] for row in tables[1].rows] == ["local/spec0", "local/spec1", "local/spec2"]
    assert tables[2].rows[0][1][:3] == ("API 10.0.0.0", "m0.gguf", "Waiting (1 of 20)")
    print(f"\nrefresh, nothing changed: {unchanged_s * 1000:.2f} ms; one request added: {added_s * 1000:.2f} ms "
          "(500 logged requests, 3 loaded models, 20 queued)")


@pytest.mark.slow
def test_the_chat_page_and_the_api_share_one_loaded_model_and_closing_stops_the_server(qtbot, tiny_gguf,
                                                                                       monkeypatch) -> None:
    pytest.importorskip("llama_cpp")
    from desktop.main_window import MainWindow

    workspace = open_workspace()
    model = workspace.models.add(InstalledModel("local/tiny", "Tiny", str(tiny_gguf), 1000, "llama_cpp", "gguf",
                                                "import", kind="chat"))
    workspace.settings.last_model_id = model.id
    workspace.settings.load_prefs[model.id] = LoadPrefs(threads=1)  # tiny model: 1 thread is faster
    workspace.settings.server.port = free_port()
    workspace.save_settings()
    monkeypatch.setattr(MainWindow, "ensure_models_page", lambda self: None)  # tested elsewhere; only slower here
    window = MainWindow(workspace)
    qtbot.addWidget(window)
    window.show()
    page, chat, controller = window.server_page, window.chat_page, window.chat_controller
    assert page.scheduler is window.scheduler
    window.show_page("Server")
    switch(qtbot, page, True)
    url = page.url.text()
    try:
        chat.panel.max_tokens.setValue(8)
        chat.composer.setPlainText("hello")
        with qtbot.waitSignal(controller.streaming_changed, timeout=WAIT_MS):
            chat.send_button.click()
        qtbot.waitUntil(lambda: not controller.streaming, timeout=WAIT_MS)
        assert controller.messages()[-1].status == "complete", chat.banner.text()
        reply = openai.OpenAI(base_url=url, api_key=page.runner.server.token).chat.completions.create(
            model="local/tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4, seed=1)
        assert reply.usage.completion_tokens == 4

        loaded = window.scheduler.snapshot().loaded
        assert len(loaded) == 1 and loaded[0].engine == "llama_cpp"  # one host answered both
        assert loaded[0].clients == ("chat page", "api:127.0.0.1")
        qtbot.waitUntil(lambda: (page.refresh(), len(page.activity.log_table.rows) == 1)[1], timeout=WAIT_MS)
        cells = page.activity.log_table.rows[0][1]
        assert cells[2:6] == ("POST", "/v1/chat/completions", "local/tiny", "200 · length")
        assert cells[7] == f"{reply.usage.prompt_tokens} + 4"
        assert [row[1][:3] for row in page.activity.loaded_table.rows] == [("local/tiny", "Chat", "Idle")]
        assert page.activity.loaded_table.rows[0][1][5] == "API 127.0.0.1, Chat page"  # most recent first
        assert page.activity.tabText(1) == "Loaded models (1)"

        python = page.connect_tab.python_code.toPlainText()
        assert 'model="local/tiny"' in python and f'base_url="{url}"' in python
        page.connect_tab.copy_curl_button.click()  # the copied command works as it is
        curl = subprocess.run(["sh", "-c", QGuiApplication.clipboard().text()], capture_output=True, text=True,
                              timeout=HANG_S)
        assert curl.returncode == 0 and '"object":"chat.completion"' in curl.stdout, curl.stdout + curl.stderr

        assert not page.activity.unload_button.isEnabled()  # nothing selected
        page.activity.loaded_view.selectRow(0)
        asked = answer(monkeypatch, QMessageBox.Yes)
        page.activity.unload_button.click()
        assert asked == []  # idle: unloaded without a question
        assert page.notice.text() == ("Unloading local/tiny: its memory goes back to the system. It loads again on its "
                                    "next request.")
        qtbot.waitUntil(lambda: not window.scheduler.snapshot().loaded, timeout=WAIT_MS)
        page.refresh()
        assert page.activity.loaded_table.rows == [] and page.activity.tabText(1) == "Loaded models"
    finally:
        window.close()
    assert refused(url)  # closing the window stopped the server...
    assert saved_server_prefs().enabled  # ...and left the switch on for the next start


def test_the_examples_name_the_chat_pages_remote_model_when_the_server_serves_it(qtbot, page) -> None:
    """A model on a remote server (TEST-NET: never reached) chosen on the chat page: the page's server serves it
    as NAME/MODEL, so the examples name it and say where it runs; offline mode keeps it out of reach, so they name
    the first chat model on this computer, and say why."""
    from engines.remote import RemoteServer, RemoteServers, find_remote_model

    servers = RemoteServers.beside(page.workspace.models.file)
    servers.add(RemoteServer("box", "http://192.0.2.1:8000/v1", models=("qwen",)))
    remote = find_remote_model("box/qwen", servers)
    tab = page.connect_tab
    assert tab.model_note.text() == ("The examples use demo/gemma-3-270m-q4_k_m, the first chat model on this "
                                     "computer.")  # nothing chosen yet

    page.set_chat_model(remote)
    assert tab.model_note.text() == ("The examples use box/qwen, the chat page's model: it runs on the remote server "
                                     "'box' (http://192.0.2.1:8000/v1), and the server passes what they send on to it.")
    assert '    model="box/qwen",' in tab.python_code.toPlainText()
    assert '"model": "box/qwen"' in tab.curl_code.toPlainText()
    switch(qtbot, page, True)  # ...and the server does serve it
    client = openai.OpenAI(base_url=page.url.text(), api_key=page.runner.server.token, max_retries=0)
    assert [model.id for model in client.models.list()] == ["demo/gemma-3-270m-q4_k_m", "box/qwen"]

    page.workspace.settings.offline = True
    page.set_chat_model(remote)
    assert tab.model_note.text() == (
        "The examples use demo/gemma-3-270m-q4_k_m, the first chat model on this computer: the chat page's model, "
        "box/qwen, runs on the remote server 'box', which offline mode keeps out of reach.")
    assert '    model="demo/gemma-3-270m-q4_k_m",' in tab.python_code.toPlainText()
    page.workspace.settings.offline = False
    page.set_chat_model(page.workspace.models.get("demo/gemma-3-270m-q4_k_m"))
    assert tab.model_note.text() == "The examples use demo/gemma-3-270m-q4_k_m, the chat page's model."


@pytest.mark.slow
def test_the_python_example_as_shown_runs_against_the_pages_server(qtbot, page, tiny_gguf) -> None:
    """The exact text of the "How to connect" Python example, with the token shown, run by Python: a complete
    script that streams a capped reply from the page's server (llama.cpp on the tiny GGUF)."""
    import sys

    pytest.importorskip("llama_cpp")
    model = page.workspace.models.add(InstalledModel("local/tiny", "Tiny", str(tiny_gguf), 1000, "llama_cpp", "gguf",
                                                     "import", kind="chat"))
    page.workspace.settings.load_prefs[model.id] = LoadPrefs(threads=1)  # tiny model: 1 thread is faster
    page.set_chat_model(model)
    assert page.connect_tab.model_note.text() == "The examples use local/tiny, the chat page's model."
    switch(qtbot, page, True)
    page.show_token_button.click()
    shown = page.connect_tab.python_code.toPlainText()
    page.connect_tab.copy_python_button.click()
    assert shown == QGuiApplication.clipboard().text()  # what is shown is what is copied
    token = page.runner.server.token
    assert shown == (
        "from openai import OpenAI\n"
        "\n"
        f'client = OpenAI(base_url="{page.url.text()}", api_key="{token}")\n'
        "stream = client.chat.completions.create(\n"
        '    model="local/tiny",\n'
        '    messages=[{"role": "user", "content": "Name three colors."}],\n'
        "    max_tokens=256,\n"
        "    stream=True,\n"
        ")\n"
        "for chunk in stream:\n"
        "    if chunk.choices:\n"
        '        print(chunk.choices[0].delta.content or "", end="", flush=True)\n'
        "print()\n")
    run = subprocess.run([sys.executable, "-c", shown], capture_output=True, text=True, timeout=HANG_S)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert run.stdout.endswith("\n")  # the reply, printed as it came (the random model may say nothing: below)
    log = page.activity.log_table  # the reply's end is noted once its stream ended: wait for it
    qtbot.waitUntil(lambda: (page.refresh(), len(log.rows) == 1 and log.rows[0][3].finish is not None)[1],
                    timeout=WAIT_MS)
    cells = log.rows[0][1]
    # The random tiny model ends at max_tokens or at its end-of-text token; a natural stop shows as plain 200.
    assert cells[2:6] in (("POST", "/v1/chat/completions", "local/tiny", "200 · length"),
                          ("POST", "/v1/chat/completions", "local/tiny", "200"))
    completion = int(cells[7].split(" + ")[1])  # prompt + completion tokens: capped by max_tokens
    assert 0 <= completion <= 256
    if not run.stdout.strip():  # unseeded, the random model now and then picks its end-of-text token (or spaces) first
        assert cells[5] == "200" or completion > 0, cells
