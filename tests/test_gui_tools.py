"""Tools in the real window, offscreen: Settings → MCP servers, the chat's Tools box, approval, calls in the reply.

The MCP server is the real ``mcp-server-time`` (PyPI). The model is the
contract-checked FakeHost (tests/fixtures/fake_host.py) writing the tool
loop's JSON-grammar steps in turn, as tests/fixtures/scripted_model.py does
for the engine tests: the subject here is the window around the loop (the
dialog, the worker thread waiting on it, Stop, what is drawn and saved);
the real Gemma runs the same loop in tests/test_tools_loop.py.
"""

from __future__ import annotations

import json
import shlex

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from engines.chat.tool_log import calls_of, chat_tools
from engines.library.installed import InstalledModel
from engines.tools.loop import REFUSED_RESULT
from engines.tools.servers import ToolServer, ToolServers
from engines.workspace import open_workspace
from tests.fixtures.chat_window import window, workspace  # noqa: F401  (on this module's chat_host)
from tests.fixtures.fake_host import FakeHost
from tests.fixtures.mcp_servers import bad_server_command, time_server_command
from tests.fixtures.scripted_model import calls_step
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture, built only by the slow image-tool test)

pytestmark = pytest.mark.gui

ANSWER = '{"reply": "It is noon in UTC."}'


class StepsHost(FakeHost):
    """FakeHost writing one given text per request (each step of the tool loop), then its usual reply."""

    def __init__(self) -> None:
        super().__init__(delay=0.002)
        self.steps: list[str] = []

    def generate(self, request):
        if self.steps:
            self.reply = self.steps.pop(0)
        return super().generate(request)


@pytest.fixture
def chat_host():
    """The window of tests/fixtures/chat_window.py, on the host that writes the tool loop's steps."""
    return StepsHost()


def add_time_server(workspace):
    from engines.tools.manage import add_server

    return add_server(ToolServers.beside(workspace.models.file), "time", command=time_server_command(), timeout_s=30)


def switch_on(window, name="time"):
    tools = window.chat_page.tools
    tools.refresh_servers()
    tools.box.switches[name].setChecked(True)


def servers_in_box(window):
    return [name for name in window.chat_page.tools.box.switches if name != "atelier"]  # atelier: the image tool


def send(qtbot, window, text):
    page = window.chat_page
    page.composer.setPlainText(text)
    with qtbot.waitSignal(window.chat_controller.streaming_changed, timeout=5000):
        page.send_button.click()


def answer_dialog(qtbot, window, button: str):
    bridge = window.chat_page.tools.bridge
    qtbot.waitUntil(lambda: bridge.dialog is not None and bridge.dialog.isVisible(), timeout=20000)
    dialog = bridge.dialog
    shown = dialog.arguments.toPlainText()
    getattr(dialog, f"{button}_button").click()
    return shown


def wait_done(qtbot, window):
    qtbot.waitUntil(lambda: not window.chat_controller.streaming, timeout=30000)


def reply_calls(window):
    c = window.chat_controller
    reply = c.store.messages(c.current_id)[-1]
    return reply, calls_of(c.store, reply.id, reply.version)


def test_settings_adds_refreshes_disables_and_removes_the_real_time_server(qtbot, window, monkeypatch):
    section = window.settings_page.mcp_servers
    section.name.setText("time")
    section.where.setText(shlex.join(time_server_command()))
    section.add_button.click()
    qtbot.waitUntil(lambda: section.list.count() == 1, timeout=30000)
    assert section.list.item(0).text().startswith("time  ·  on  ·  2 tools  ·  ")
    assert "• get_current_time: " in section.tools_label.text() and "• convert_time: " in section.tools_label.text()
    assert section.status.text() == "Added time: 2 tool(s). Switch it on in a chat's Tools section."
    section.refresh_button.click()
    qtbot.waitUntil(lambda: section.status.text() == "time lists 2 tool(s).", timeout=30000)
    section.enable_button.click()
    assert section.status.text() == "time is disabled: no chat starts it."
    assert ToolServers.beside(window.workspace.models.file).get("time").enabled is False
    window.chat_page.tools.refresh_servers()
    assert servers_in_box(window) == []  # the chat lists enabled servers only
    section.enable_button.click()
    assert section.enable_button.text() == "Disable"
    window.chat_page.tools.refresh_servers()
    assert servers_in_box(window) == ["time"]
    # the same name again, and a program that is not installed: one line each, nothing added
    section.name.setText("time")
    section.where.setText("mcp-server-time")
    section.add_button.click()
    qtbot.waitUntil(lambda: section.add_button.isEnabled(), timeout=30000)
    assert section.status.text() == ("A tool server called 'time' exists already. Remove it first, or choose "
                                     "another name.")
    section.name.setText("nothere")
    section.where.setText("no-such-program-atelier --stdio")
    section.add_button.click()
    qtbot.waitUntil(lambda: section.add_button.isEnabled() and "no-such-program" in section.status.text(),
                    timeout=30000)
    assert "\n" not in section.status.text() and section.list.count() == 1
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    section.remove_button.click()
    assert section.list.count() == 1
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    section.remove_button.click()
    assert section.list.count() == 0 and section.status.text() == "Removed time."


def test_a_call_allowed_once_is_run_drawn_saved_and_drawn_again_when_the_chat_is_reopened(qtbot, window):
    add_time_server(window.workspace)
    switch_on(window)
    page = window.chat_page
    assert page.tools.box.mode.text().startswith("Mode: Tool calls through a JSON grammar")
    window.host.steps = [calls_step(("get_current_time", {"timezone": "UTC"})), ANSWER]
    send(qtbot, window, "What time is it?")
    shown = answer_dialog(qtbot, window, "once")
    assert json.loads(shown) == {"timezone": "UTC"} and shown == '{\n  "timezone": "UTC"\n}'
    wait_done(qtbot, window)
    reply, calls = reply_calls(window)
    assert reply.content == "It is noon in UTC." and reply.status == "complete"
    assert [(c.server, c.tool, c.status) for c in calls] == [("time", "get_current_time", "done")]
    assert '"timezone": "UTC"' in calls[0].result
    text = page.view.toPlainText()
    assert "⚙ get_current_time  time · done" in text and "▸ Show result" in text
    assert '"datetime"' in calls[0].result and '"datetime"' not in text  # folded
    page.view.call_toggled.emit(str(reply.id), calls[0].call_id)
    qtbot.waitUntil(lambda: "▾ Hide result" in page.view.toPlainText())
    assert '"datetime"' in page.view.toPlainText()
    # the chat remembers its tools; reopened, its calls are drawn from the history
    conversation = window.chat_controller.current_id
    assert chat_tools(window.chat_controller.store, conversation) == (["time"], None)
    page.new_chat()
    assert page.tools.box.chosen() == []
    page._select(conversation)
    assert page.tools.box.chosen() == ["time"]
    assert "⚙ get_current_time  time · done" in page.view.toPlainText()
    # the next turn re-sends the call and its result to the model
    window.host.steps = ['{"reply": "Still noon."}']
    send(qtbot, window, "And now?")
    wait_done(qtbot, window)
    sent = window.host.requests[-1].messages
    assert any(m.content.startswith("Result of get_current_time: ") for m in sent)


def test_always_allow_asks_once_per_chat_and_refuse_goes_back_to_the_model(qtbot, window):
    add_time_server(window.workspace)
    switch_on(window)
    window.host.steps = [calls_step(("get_current_time", {"timezone": "UTC"})), ANSWER]
    send(qtbot, window, "Time?")
    answer_dialog(qtbot, window, "always")
    wait_done(qtbot, window)
    window.host.steps = [calls_step(("get_current_time", {"timezone": "Europe/Paris"})), ANSWER]
    asked = []
    window.chat_page.tools.bridge.asked.connect(asked.append)
    send(qtbot, window, "And in Paris?")
    wait_done(qtbot, window)
    assert asked == []
    assert [c.status for c in reply_calls(window)[1]] == ["done"]
    # another tool of the same server is asked for; refused, the model is told so and answers
    window.host.steps = [calls_step(("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                      "target_timezone": "Asia/Tokyo"})), ANSWER]
    send(qtbot, window, "Noon UTC in Tokyo?")
    answer_dialog(qtbot, window, "refuse")
    wait_done(qtbot, window)
    reply, calls = reply_calls(window)
    assert [(c.tool, c.status, c.result) for c in calls] == [("convert_time", "refused", REFUSED_RESULT)]
    assert reply.content == "It is noon in UTC."
    assert "⚙ convert_time  time · refused" in window.chat_page.view.toPlainText()


def test_stop_while_the_dialog_waits_refuses_and_ends_the_turn(qtbot, window):
    add_time_server(window.workspace)
    switch_on(window)
    window.host.steps = [calls_step(("get_current_time", {"timezone": "UTC"})), ANSWER]
    send(qtbot, window, "Time?")
    bridge = window.chat_page.tools.bridge
    qtbot.waitUntil(lambda: bridge.dialog is not None and bridge.dialog.isVisible(), timeout=20000)
    assert "⚙ get_current_time  time · waiting for your approval" in window.chat_page.view.toPlainText()
    window.chat_page.stop_button.click()
    wait_done(qtbot, window)
    assert bridge.dialog is None
    reply, calls = reply_calls(window)
    assert reply.status == "cancelled" and [c.status for c in calls] == ["refused"]
    assert len(window.host.requests) == 1  # no step after the Stop
    assert window.chat_page.status_line.text() == "Stopped."
    # the next turn asks again
    window.host.steps = [calls_step(("get_current_time", {"timezone": "UTC"})), ANSWER]
    send(qtbot, window, "Time, please?")
    answer_dialog(qtbot, window, "once")
    wait_done(qtbot, window)
    assert reply_calls(window)[0].content == "It is noon in UTC."


def test_a_server_that_fails_to_start_is_one_line_and_the_chat_goes_on(qtbot, window):
    servers = ToolServers.beside(window.workspace.models.file)
    servers.add(ToolServer("broken", command=tuple(bad_server_command("crash")), timeout_s=10))
    switch_on(window, "broken")
    window.host.steps = ["A plain answer."]
    send(qtbot, window, "Hello")
    wait_done(qtbot, window)
    banner = window.chat_page.banner.text()
    assert "broken" in banner and banner.endswith("The reply goes on without it.") and "\n" not in banner
    reply, calls = reply_calls(window)
    assert reply.content == "A plain answer." and reply.status == "complete" and calls == []


def test_reply_as_json_checks_the_schema_before_sending_and_is_kept_with_the_chat(qtbot, window, tmp_path,
                                                                                 monkeypatch):
    page = window.chat_page
    box = page.tools.box
    box.json_switch.setChecked(True)
    box.schema.setPlainText('{"type": "object",')
    page.composer.setPlainText("Name a colour")
    page.send_button.click()
    assert not window.chat_controller.streaming and page.composer.toPlainText() == "Name a colour"
    assert box.problem.text().startswith("The reply schema is not JSON: ")
    box.schema.setPlainText('{"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}}')
    page.send_button.click()
    assert not window.chat_controller.streaming
    assert box.problem.text().startswith("The JSON schema cannot be used to constrain the reply: ")
    assert "minimum" in box.problem.text() and page.banner.text() == box.problem.text()
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}}, "required": ["colour"]}
    file = tmp_path / "schema.json"
    file.write_text(json.dumps(schema))
    monkeypatch.setattr("desktop.chat.chat_tools.QFileDialog.getOpenFileName", lambda *a, **k: (str(file), ""))
    box.load_button.click()
    assert json.loads(box.schema.toPlainText()) == schema
    window.host.steps = ['{"colour": "red"}']
    send(qtbot, window, "Name a colour")
    wait_done(qtbot, window)
    assert window.host.requests[-1].json_schema == schema
    conversation = window.chat_controller.current_id
    assert chat_tools(window.chat_controller.store, conversation) == ([], schema)
    page.new_chat()
    assert not box.json_switch.isChecked()
    page._select(conversation)
    assert box.json_switch.isChecked() and json.loads(box.schema.toPlainText()) == schema
    assert box.schema.isEnabled() and Qt  # the box is live again


def test_an_unknown_tool_and_bad_arguments_are_drawn_as_invalid_and_nothing_runs(qtbot, window):
    add_time_server(window.workspace)
    switch_on(window)
    asked = []
    window.chat_page.tools.bridge.asked.connect(asked.append)
    window.host.steps = [calls_step(("no_such_tool", {}), ("get_current_time", {"zone": 3})), ANSWER]
    send(qtbot, window, "Time?")
    wait_done(qtbot, window)
    assert asked == []  # an invalid call is never offered for approval
    reply, calls = reply_calls(window)
    assert [(c.tool, c.status) for c in calls] == [("no_such_tool", "invalid"), ("get_current_time", "invalid")]
    assert calls[0].result == "Error: there is no tool 'no_such_tool'. The tools are: get_current_time, convert_time."
    text = window.chat_page.view.toPlainText()
    assert "⚙ no_such_tool  not run: invalid call" in text
    assert "⚙ get_current_time  time · not run: invalid call" in text


def test_the_image_tool_switch_and_an_image_it_made_shown_inline(qtbot, window, tmp_path):
    import importlib.util

    from PySide6.QtGui import QColor, QImage, QTextDocument
    from PySide6.QtCore import QUrl

    from desktop.chat.render import MessageDisplay
    from desktop.chat.tool_calls import CallDisplay, display_of, tool_image_href
    from engines.chat.tool_log import SavedCall

    if importlib.util.find_spec("engines.images.image_tool") is None:
        pytest.skip("this Atelier has no image tool (engines/images/image_tool.py)")
    page = window.chat_page
    page.tools.refresh_servers()
    box = page.tools.box
    assert box.switches["atelier"].text() == "Atelier's image engine"
    box.switches["atelier"].setChecked(True)
    window.host.steps = ["No image today."]
    send(qtbot, window, "Make an image of a fox")
    wait_done(qtbot, window)
    assert page.banner.text() == ("The image tool is not offered: no image model is chosen on the Images page yet; "
                                  "pick one there. The reply goes on without it.")
    assert reply_calls(window)[0].content == "No image today."
    assert chat_tools(window.chat_controller.store, window.chat_controller.current_id) == (["atelier"], None)
    # a make_image call's gallery file is drawn under the call, from its result line as the history keeps it
    picture = tmp_path / "fox.png"
    image = QImage(64, 48, QImage.Format.Format_RGB32)
    image.fill(QColor("orange"))
    assert image.save(str(picture))
    saved = SavedCall(1, 1, 1, 1, "call_1", "atelier", "make_image", '{"prompt":"a fox"}', "done",
                      f"Made a 64x48 image (seed 7); it is in the gallery as fox.png ({picture}).")
    shown = display_of(saved)
    assert shown == CallDisplay("call_1", "make_image", "atelier", '{"prompt":"a fox"}', "done", saved.result,
                                image=str(picture))
    page.view.set_messages([MessageDisplay("9", "assistant", "Here is your fox.", calls=(shown,))])
    loaded = page.view.loadResource(QTextDocument.ResourceType.ImageResource.value, QUrl(tool_image_href(str(picture))))
    assert (loaded.width(), loaded.height()) == (64, 48)
    assert "⚙ make_image  atelier · done" in page.view.toPlainText()


@pytest.mark.slow
def test_real_gemma_in_the_real_window_calls_the_real_time_tool_after_approval(qtbot, gemma_path, monkeypatch):
    """The demo Gemma 270M, through the app's scheduler and engine host, under the grammar fallback.

    Its choices are fixed by the seed, the prompt and the thread count (2, as the engine test runs it):
    with seed 2 it calls the time tools. Every call it makes is asked for and allowed ("Always allow").
    """
    from desktop.main_window import MainWindow
    from engines.settings import LoadPrefs

    ws = open_workspace()
    model = ws.models.add(InstalledModel("local/gemma", "Gemma 3 270M", str(gemma_path), gemma_path.stat().st_size,
                                         "llama_cpp", "gguf", "import", kind="chat"))
    ws.settings.last_model_id = model.id
    ws.settings.load_prefs[model.id] = LoadPrefs(context_length=4096, threads=2)
    ws.save_settings()
    add_time_server(ws)
    monkeypatch.setattr(MainWindow, "ensure_models_page", lambda self: None)
    win = MainWindow(ws)  # the real scheduler, engine host and llama.cpp
    qtbot.addWidget(win)
    win.show()
    page = win.chat_page
    page.panel.random_seed.setChecked(False)
    page.panel.seed.setValue(2)
    page.panel.max_tokens.setValue(120)
    page.panel.temperature.setValue(0.7)
    switch_on(win)
    asked = []
    page.tools.bridge.asked.connect(lambda dialog: (asked.append(dialog.arguments.toPlainText()),
                                                    dialog.always_button.click()))
    page.composer.setPlainText("What time is it in Tokyo? Use the time tools.")
    page.send_button.click()
    qtbot.waitUntil(lambda: not win.chat_controller.streaming, timeout=600_000)
    try:
        reply, calls = reply_calls(win)
        assert calls and asked, page.banner.text()
        assert {c.status for c in calls} <= {"done", "error"}  # the server ran each: a time, or its own words
        assert all(json.loads(shown) == json.loads(c.arguments_json) for shown, c in zip(asked, calls))
        assert len(asked) == len({c.tool for c in calls})  # "Always" asks once per tool
        assert reply.status == "complete"
        text = page.view.toPlainText()
        assert f"⚙ {calls[0].tool}  time · {calls[0].status}" in text
        conversation = win.chat_controller.current_id
        page.new_chat()
        page._select(conversation)
        assert page.view.toPlainText().count("⚙ ") == len(calls)
    finally:
        win.close()


def test_closing_the_window_while_the_dialog_waits_ends_the_turn_and_the_worker(qtbot, window):
    add_time_server(window.workspace)
    switch_on(window)
    window.host.steps = [calls_step(("get_current_time", {"timezone": "UTC"})), ANSWER]
    send(qtbot, window, "Time?")
    bridge = window.chat_page.tools.bridge
    qtbot.waitUntil(lambda: bridge.dialog is not None and bridge.dialog.isVisible(), timeout=20000)
    controller = window.chat_controller
    window.close()
    assert controller.worker_stopped and bridge.dialog is None
    from engines.chat.store import ChatStore

    with ChatStore(window.workspace.paths.database) as store:
        (chat,) = store.list_conversations()
        last = store.messages(chat.id)[-1]
        [call] = calls_of(store, last.id, last.version)
    assert last.role == "assistant" and last.status in ("interrupted", "cancelled")
    assert (call.tool, call.status, call.result) == ("get_current_time", "refused", REFUSED_RESULT)


def test_a_long_call_is_drawn_live_running_with_its_progress_then_done(qtbot, window):
    """The real @modelcontextprotocol/server-everything's long-running tool reports progress as it goes."""
    from engines.tools.loop import ToolCallEvent, ToolProgressEvent
    from engines.tools.manage import add_server
    from tests.fixtures.mcp_servers import everything_server_command

    add_server(ToolServers.beside(window.workspace.models.file), "everything", command=everything_server_command(),
               timeout_s=60)
    switch_on(window, "everything")
    from PySide6.QtCore import QObject, Slot

    page = window.chat_page
    seen = []

    class Recorder(QObject):  # on the GUI thread, after the page drew the event
        @Slot(int, object)
        def record(self, _conversation, event):
            page.view.flush()
            if isinstance(event, (ToolCallEvent, ToolProgressEvent)):
                seen.append(next((l for l in page.view.toPlainText().splitlines() if l.startswith("⚙ ")), ""))

    recorder = Recorder()
    window.chat_controller.worker.tool_event.connect(recorder.record)
    window.host.steps = [calls_step(("trigger-long-running-operation", {"duration": 1, "steps": 4})), ANSWER]
    send(qtbot, window, "Run the long operation")
    answer_dialog(qtbot, window, "once")
    wait_done(qtbot, window)
    shown = list(dict.fromkeys(seen))
    assert shown[0] == "⚙ trigger-long-running-operation  everything · waiting for your approval"
    assert "⚙ trigger-long-running-operation  everything · running…" in shown
    assert "⚙ trigger-long-running-operation  everything · running… 4 / 4" in shown
    assert shown[-1] == "⚙ trigger-long-running-operation  everything · done"
    assert [c.status for c in reply_calls(window)[1]] == ["done"]


def test_a_server_that_dies_on_a_call_is_one_line_under_the_reply_and_the_chat_goes_on(qtbot, window):
    servers = ToolServers.beside(window.workspace.models.file)
    servers.add(ToolServer("dying", command=tuple(bad_server_command("dies_on_call")), timeout_s=10))
    switch_on(window, "dying")
    window.host.steps = [calls_step(("explode", {"reason": "test"})), '{"reply": "The tool failed, sorry."}']
    send(qtbot, window, "Blow it up")
    answer_dialog(qtbot, window, "once")
    wait_done(qtbot, window)
    reply, calls = reply_calls(window)
    line = "The tool server 'dying' stopped while asked to run 'explode'."
    assert [(c.tool, c.status, c.result) for c in calls] == [("explode", "error", f"Error: {line}")]
    assert reply.content == "The tool failed, sorry." and reply.status == "complete" and reply.notice == line
    text = window.chat_page.view.toPlainText()
    assert "⚙ explode  dying · error" in text and line in text
    window.host.steps = ['{"reply": "Still here."}']
    send(qtbot, window, "Are you there?")
    wait_done(qtbot, window)
    assert reply_calls(window)[0].content == "Still here."


def test_settings_adds_a_streamable_http_server_by_url_and_an_unreachable_url_is_one_line(qtbot, window):
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(__file__).parent / "fixtures" / "mcp_dying_server.py"
    process = subprocess.Popen([sys.executable, str(script), "http", str(port)], stderr=subprocess.DEVNULL)
    section = window.settings_page.mcp_servers
    try:
        for _ in range(200):  # until it listens (the loop ends when it connects)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                assert process.poll() is None, "the HTTP MCP server ended before listening"
                time.sleep(0.1)
        section.name.setText("web")
        section.where.setText(f"http://127.0.0.1:{port}/mcp")
        section.where.returnPressed.emit()
        qtbot.waitUntil(lambda: section.list.count() == 1, timeout=30000)
        assert section.list.item(0).text() == f"web  ·  on  ·  3 tools  ·  http://127.0.0.1:{port}/mcp"
        assert section.tools_label.text().startswith("web offers:\n• explode: ")
    finally:
        process.kill()
        process.wait()
    section.refresh_button.click()
    qtbot.waitUntil(lambda: section.add_button.isEnabled() and "could not be reached" in section.status.text(),
                    timeout=30000)
    assert section.status.text().startswith(f"The tool server 'web' at http://127.0.0.1:{port}/mcp could not be "
                                            "reached: ")
    assert "\n" not in section.status.text() and section.list.count() == 1


def test_regenerate_makes_new_calls_and_each_version_shows_its_own(qtbot, window):
    add_time_server(window.workspace)
    switch_on(window)
    page = window.chat_page
    window.host.steps = [calls_step(("get_current_time", {"timezone": "UTC"})), ANSWER]
    send(qtbot, window, "Time?")
    answer_dialog(qtbot, window, "always")
    wait_done(qtbot, window)
    window.host.steps = [calls_step(("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                      "target_timezone": "Asia/Tokyo"})), '{"reply": "21:00 in Tokyo."}']
    with qtbot.waitSignal(window.chat_controller.streaming_changed, timeout=5000):
        page.regenerate_button.click()
    answer_dialog(qtbot, window, "once")
    wait_done(qtbot, window)
    reply, calls = reply_calls(window)
    assert reply.version == 2 and [c.tool for c in calls] == ["convert_time"]
    text = page.view.toPlainText()
    assert "⚙ convert_time  time · done" in text and "get_current_time" not in text
    page.view.version_requested.emit(str(reply.id), -1)
    text = page.view.toPlainText()
    assert "⚙ get_current_time  time · done" in text and "convert_time" not in text


@pytest.mark.slow
def test_the_image_tool_makes_a_gallery_image_shown_under_its_call(qtbot, window, request):
    """The tiny diffusion pipeline, run by the window's scheduler in its engine host, as the Images page runs it."""
    from pathlib import Path

    from desktop.pages.images_page import image_engine_availability
    from engines.settings import ImagePrefs

    state = image_engine_availability()
    assert state.available, state.reason
    tiny = request.getfixturevalue("tiny_sd")
    ws = window.workspace
    model = ws.models.add(InstalledModel("import/tiny-sd", "tiny-sd", str(tiny), 0, "diffusers", "diffusers", "import"))
    ws.settings.images = ImagePrefs(model_id=model.id, width=64, height=64, steps=2, guidance=7.0)
    page = window.chat_page
    page.tools.refresh_servers()
    assert page.tools.box.servers_area.itemAt(1).widget().text() == (
        "make_image, with tiny-sd (the Images page's model and settings)")
    page.tools.box.switches["atelier"].setChecked(True)
    window.host.steps = [calls_step(("make_image", {"prompt": "a red lighthouse"})), '{"reply": "Here it is."}']
    send(qtbot, window, "Make an image of a red lighthouse")
    answer_dialog(qtbot, window, "once")
    qtbot.waitUntil(lambda: not window.chat_controller.streaming, timeout=600_000)
    reply, [call] = reply_calls(window)
    assert (call.server, call.tool, call.status) == ("atelier", "make_image", "done"), call.result
    assert reply.content == "Here it is."
    from desktop.chat.tool_calls import display_of

    image = display_of(call).image
    assert Path(image).exists() and image.startswith(str(ws.paths.data / "images"))
    html = page.view.toHtml()
    assert "atelier-toolimage:" in html and "⚙ make_image  atelier · done" in page.view.toPlainText()
