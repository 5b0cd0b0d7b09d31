"""The Chat page under pytest-qt: send, stream, stop, regenerate, switch, restart."""

import pytest
from PySide6.QtCore import QTimer

from engines.workspace import open_workspace
from tests.fixtures.chat_window import chat_host, window, workspace  # noqa: F401  (the window on a FakeHost)
from tests.fixtures.fake_host import FakeHost

pytestmark = pytest.mark.gui


def send(qtbot, window, text):
    page = window.chat_page
    page.composer.setPlainText(text)
    with qtbot.waitSignal(window.chat_controller.streaming_changed, timeout=5000):
        qtbot.keyClick(page.composer, "\r")
    qtbot.waitUntil(lambda: not window.chat_controller.streaming, timeout=10000)


def test_window_has_the_six_pages(window):
    assert window.windowTitle() == "Atelier"
    labels = [window.nav.item(i).text() for i in range(window.nav.count())]
    assert [l.split()[-1] for l in labels] == ["Chat", "Documents", "Images", "Models", "Server", "Settings"]


def test_send_streams_and_saves(qtbot, window):
    send(qtbot, window, "Hi there")
    store = window.chat_controller.store
    messages = store.messages(window.chat_controller.current_id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].content == window.host.reply and messages[1].status == "complete"
    assert "bold" in window.chat_page.view.toPlainText()
    assert window.chat_page.composer.toPlainText() == ""
    # the conversation got a title from the first message
    assert store.get_conversation(window.chat_controller.current_id).title == "Hi there"


def test_shift_enter_adds_a_newline(qtbot, window):
    from PySide6.QtCore import Qt

    composer = window.chat_page.composer
    composer.setPlainText("line one")
    composer.moveCursor(composer.textCursor().MoveOperation.End)
    qtbot.keyClick(composer, Qt.Key_Return, Qt.ShiftModifier)
    assert composer.toPlainText() == "line one\n"
    assert not window.chat_controller.streaming


def test_stop_keeps_the_partial_reply(qtbot, window):
    window.host.reply = " ".join(f"w{i}" for i in range(400))
    window.host.delay = 0.02
    page = window.chat_page
    page.composer.setPlainText("long please")
    qtbot.keyClick(page.composer, "\r")
    qtbot.waitUntil(lambda: "w5" in page.view.toPlainText(), timeout=5000)
    assert page.stop_button.isVisible()
    qtbot.mouseClick(page.stop_button, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.LeftButton)
    qtbot.waitUntil(lambda: not window.chat_controller.streaming, timeout=5000)
    reply = window.chat_controller.messages()[-1]
    assert reply.status == "cancelled" and 0 < len(reply.content.split()) < 400


def test_regenerate_replaces_the_last_reply(qtbot, window):
    send(qtbot, window, "first")
    window.host.reply = "a different answer"
    with qtbot.waitSignal(window.chat_controller.streaming_changed, timeout=5000):
        window.chat_page.regenerate_button.click()
    qtbot.waitUntil(lambda: not window.chat_controller.streaming, timeout=5000)
    messages = window.chat_controller.messages()
    assert [m.content for m in messages] == ["first", "a different answer"]


def test_edit_and_resend_the_last_message(qtbot, window):
    send(qtbot, window, "frist")
    page = window.chat_page
    page.edit_button.click()
    assert page.composer.toPlainText() == "frist"
    page.composer.setPlainText("first")
    with qtbot.waitSignal(window.chat_controller.streaming_changed, timeout=5000):
        qtbot.keyClick(page.composer, "\r")
    qtbot.waitUntil(lambda: not window.chat_controller.streaming, timeout=5000)
    messages = window.chat_controller.messages()
    assert [m.role for m in messages] == ["user", "assistant"] and messages[0].content == "first"


def test_switching_chats_shows_each_history(qtbot, window):
    send(qtbot, window, "about apples")
    first = window.chat_controller.current_id
    window.chat_page.conversations.new_button.click()
    send(qtbot, window, "about pears")
    assert window.chat_controller.current_id != first
    window.chat_page.conversations.selected.emit(first)
    assert "about apples" in window.chat_page.view.toPlainText()
    assert "about pears" not in window.chat_page.view.toPlainText()
    window.chat_page.conversations.search.setText("pears")
    assert window.chat_page.conversations.list.count() == 1


def test_crash_mid_reply_keeps_the_window_and_the_partial_reply(qtbot, window):
    window.host.reply = "one two three four five six"
    window.host.crash_after = 3
    send(qtbot, window, "crash please")
    page = window.chat_page
    assert page.banner.isVisible() and "stopped unexpectedly" in page.banner.text()
    reply = window.chat_controller.messages()[-1]
    assert reply.status == "interrupted" and reply.content == "one two three"
    window.host.crash_after = None
    send(qtbot, window, "again")
    assert not page.banner.isVisible()
    assert window.chat_controller.messages()[-1].status == "complete"


def test_restart_restores_history(qtbot, workspace):
    from desktop.main_window import MainWindow
    from desktop.pages.chat_controller import ChatController

    first = MainWindow(workspace, ChatController(workspace, host=FakeHost()))
    qtbot.addWidget(first)
    send(qtbot, first, "remember me")
    first.close()
    again = MainWindow(open_workspace(), ChatController(open_workspace(), host=FakeHost()))
    qtbot.addWidget(again)
    assert "remember me" in again.chat_page.view.toPlainText()
    assert again.chat_page.conversations.list.count() == 1
    again.close()


def test_model_picker_lists_installed_models_and_demo_note(window):
    combo = window.chat_page.panel.model_combo
    names = [combo.itemText(i) for i in range(combo.count())]
    assert "Fake model" in names and any("Gemma 3 270M" in n for n in names)


def test_context_overflow_asks_then_drops_the_oldest_turns_with_a_notice(qtbot, window, monkeypatch):
    asked = []
    monkeypatch.setattr(window.chat_page, "_ask_overflow", lambda cid: asked.append(cid))
    window.chat_controller.overflow_question.disconnect()
    window.chat_controller.overflow_question.connect(window.chat_page._ask_overflow)
    window.host.overflow_unless_dropping = True
    send(qtbot, window, "a very long chat")
    assert asked == [window.chat_controller.current_id]
    assert [m.role for m in window.chat_controller.messages()] == ["user"]  # no empty reply left behind
    with qtbot.waitSignal(window.chat_controller.streaming_changed, timeout=5000):
        window.chat_controller.resolve_overflow(drop_oldest=True)
    qtbot.waitUntil(lambda: not window.chat_controller.streaming, timeout=5000)
    reply = window.chat_controller.messages()[-1]
    assert reply.status == "complete" and "oldest 2 message" in (reply.notice or "")
    assert "oldest 2 message" in window.chat_page.view.toPlainText()


def test_models_page_is_built_after_the_window_shows_and_on_first_visit(qtbot, window, monkeypatch):
    from desktop.main_window import MainWindow

    monkeypatch.undo()
    window.ensure_models_page = MainWindow.ensure_models_page.__get__(window)
    QTimer.singleShot(0, window.ensure_models_page)
    qtbot.waitUntil(lambda: window.models_page is not None, timeout=5000)
    window.show_page("Models")
    assert window.stack.currentWidget() is window.models_page
    window.show_page("Images")
    assert window.stack.currentWidget() is window.images_page


def test_context_cache_choice_is_saved_per_model_and_used_for_the_next_load(qtbot, window):
    from engines.settings import LoadPrefs

    panel = window.chat_page.panel
    combo = panel.cache_type
    assert [combo.itemData(i) for i in range(combo.count())] == ["f16", "q8_0", "q4_0"]
    assert "half the memory" in combo.itemText(1) and "a quarter of the memory" in combo.itemText(2)
    assert combo.currentData() == "f16"
    with qtbot.waitSignal(panel.load_prefs_changed) as changed:
        combo.setCurrentIndex(combo.findData("q8_0"))
    assert changed.args[0].cache_type == "q8_0"
    assert open_workspace().settings.prefs_for("local/fake").cache_type == "q8_0"  # persisted for this model
    assert open_workspace().settings.prefs_for("demo").cache_type == "f16"
    send(qtbot, window, "hello")
    assert window.host.loads[-1].cache_type == "q8_0"
    assert "q8_0 cache" in window.chat_page.status_line.text()
    assert "flash attention on" in window.chat_page.status_line.toolTip()
    # showing saved prefs sets the combo without writing anything back
    with qtbot.assertNotEmitted(panel.load_prefs_changed):
        panel.set_load_prefs(LoadPrefs(cache_type="q4_0"))
    assert combo.currentData() == "q4_0" and panel.load_prefs().cache_type == "q4_0"
