"""Every action of the Chat page, as a demanding user drives it: menus, keys, dialogs, versions, imports.

The real window offscreen with a scripted engine host; dialogs and menus
are the real ones, answered by clicking in them (tests/fixtures/dialogs.py).
pytest-qt fails a test on any exception raised in a slot.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt, QUrl
from PySide6.QtWidgets import QAbstractButton, QApplication, QFileDialog, QLabel

from desktop.chat.render import copy_href, version_href
from engines.chat import ChatStore
from engines.library.installed import InstalledModel
from engines.workspace import open_workspace
from tests.fixtures.dialogs import answer_next_dialog, choose_in_next_menu, dialogs_answered  # noqa: F401
from tests.fixtures.fake_host import FakeHost

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("dialogs_answered")]


@pytest.fixture
def workspace(tmp_path):
    ws = open_workspace()
    for model_id, name in (("local/fake", "Fake model"), ("local/other", "Other model")):
        ws.models.add(InstalledModel(model_id, name, str(tmp_path / f"{name}.gguf"), 1000, "llama_cpp", "gguf",
                                     "import", kind="chat"))
    ws.settings.last_model_id = "local/fake"
    ws.save_settings()
    return ws


@pytest.fixture
def window(qtbot, workspace, monkeypatch):
    from desktop.main_window import MainWindow
    from desktop.pages.chat_controller import ChatController

    monkeypatch.setattr(MainWindow, "ensure_models_page", lambda self: None)  # tested on its own
    host = FakeHost()
    win = MainWindow(workspace, ChatController(workspace, host=host))
    qtbot.addWidget(win)
    win.show()
    win.activateWindow()
    win.host = host
    yield win
    win.close()


def send(qtbot, win, text: str) -> None:
    page = win.chat_page
    page.composer.setPlainText(text)
    with qtbot.waitSignal(win.chat_controller.streaming_changed, timeout=10_000):
        qtbot.keyClick(page.composer, Qt.Key_Return)
    qtbot.waitUntil(lambda: not win.chat_controller.streaming, timeout=30_000)


def titles(win) -> list[str]:
    chats = win.chat_page.conversations.list
    return [chats.item(i).text() for i in range(chats.count())]


def right_click(win, row: int) -> None:
    chats = win.chat_page.conversations.list
    chats.customContextMenuRequested.emit(chats.visualItemRect(chats.item(row)).center())


# ---- deleting and renaming ---------------------------------------------------------------------------------


def test_delete_asks_first_and_cancel_keeps_the_chat(qtbot, window) -> None:
    send(qtbot, window, "keep me")
    send(qtbot, window, "and me")
    menu = choose_in_next_menu("Delete…")
    asked = answer_next_dialog("Cancel")
    right_click(window, 0)
    assert menu == ["Rename…\tF2", "Export as Markdown…", "Export as JSON…", "Delete…\tDel"]
    assert asked == ["Delete “keep me” and all its messages? This cannot be undone."]
    assert titles(window) == ["keep me"]

    window.chat_page.new_chat()
    send(qtbot, window, "a second chat")
    choose_in_next_menu("Delete…")
    answer_next_dialog("Delete")
    right_click(window, 1)
    assert titles(window) == ["a second chat"]
    assert [c.title for c in window.chat_controller.store.list_conversations()] == ["a second chat"]
    assert "a second chat" in window.chat_page.view.toPlainText()


def test_f2_renames_and_del_deletes_the_selected_chat(qtbot, window) -> None:
    send(qtbot, window, "first question")
    chats = window.chat_page.conversations.list
    chats.setFocus()
    chats.setCurrentRow(0)
    asked = answer_next_dialog("OK", text="  My   renamed chat ")
    qtbot.keyClick(chats, Qt.Key_F2)
    assert asked == ["New name:"]
    assert titles(window) == ["My renamed chat"] and window.chat_page.title.text() == "My renamed chat"
    window.activateWindow()  # the window manager does this when a dialog closes; offscreen, the test does
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    chats.setFocus()
    answer_next_dialog("Delete")
    qtbot.keyClick(chats, Qt.Key_Delete)
    assert titles(window) == [] and window.chat_page.title.text() == "New chat"
    assert "Start a conversation" in window.chat_page.view.toPlainText()
    # F2 and Del belong to the list alone (the Documents page has its own Del): PySide6 drops a context= given
    # to QShortcut's (key, parent, slot) constructor, which once left both window-wide
    from PySide6.QtGui import QShortcut
    shortcuts = chats.findChildren(QShortcut)
    assert len(shortcuts) == 2 and {s.context() for s in shortcuts} == {Qt.ShortcutContext.WidgetShortcut}


def test_del_in_the_search_box_edits_the_search_and_deletes_nothing(qtbot, window) -> None:
    send(qtbot, window, "untouchable")
    search = window.chat_page.conversations.search
    search.setText("unt")
    search.setFocus()
    search.setCursorPosition(0)
    qtbot.keyClick(search, Qt.Key_Delete)
    assert search.text() == "nt" and titles(window) == ["untouchable"]


# ---- new chats, stale messages, titles -----------------------------------------------------------------------


def test_new_chat_never_piles_up_empty_chats(qtbot, window) -> None:
    page = window.chat_page
    for _ in range(3):
        page.conversations.new_button.click()
    assert titles(window) == [] and page.title.text() == "New chat"
    send(qtbot, window, "the only chat")
    for _ in range(3):
        page.conversations.new_button.click()
    assert titles(window) == ["the only chat"]
    legacy = window.chat_controller.store.create_conversation()  # an empty chat left by an older version
    page.refresh_conversations()
    page._select(legacy.id)
    assert titles(window) == ["New chat", "the only chat"]
    page._select(window.chat_controller.conversations()[-1].id)
    assert titles(window) == ["the only chat"]  # removed when left: it held nothing


def test_stopped_and_exported_do_not_follow_the_user_into_another_chat(qtbot, window, tmp_path, monkeypatch) -> None:
    page = window.chat_page
    send(qtbot, window, "first chat")
    window.host.reply = " ".join(f"w{i}" for i in range(500))
    window.host.delay = 0.02
    page.new_chat()
    page.composer.setPlainText("second chat")
    qtbot.keyClick(page.composer, Qt.Key_Return)
    qtbot.waitUntil(lambda: "w3" in page.view.toPlainText(), timeout=10_000)
    qtbot.keyClick(page.composer, Qt.Key_Escape)  # Esc stops
    qtbot.waitUntil(lambda: not window.chat_controller.streaming, timeout=10_000)
    assert page.status_line.text() == "Stopped."
    page.conversations.list.setCurrentRow(1)
    assert page.title.text() == "first chat" and page.status_line.text() != "Stopped."

    target = tmp_path / "exported.md"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "Markdown (*.md)"))
    choose_in_next_menu("Export as Markdown…")
    right_click(window, 1)
    assert page.status_line.text() == f"Exported to {target}"
    assert target.read_text(encoding="utf-8").startswith("# first chat\n")
    page.new_chat()
    assert not page.status_line.text().startswith("Exported to")


def test_the_empty_chat_names_the_model_in_the_picker(qtbot, window) -> None:
    page = window.chat_page
    combo = page.panel.model_combo
    assert "You are chatting with Fake model." in page.view.toPlainText()
    combo.setCurrentIndex(combo.findData("local/other"))
    assert "You are chatting with Other model." in page.view.toPlainText()
    send(qtbot, window, "with the other model")
    combo.setCurrentIndex(combo.findData("local/fake"))  # this chat now uses Fake model
    page.new_chat()
    assert combo.currentText() == "Fake model"
    assert "You are chatting with Fake model." in page.view.toPlainText()


def test_a_chat_title_follows_edit_and_resend_and_carries_no_markdown(qtbot, window) -> None:
    page = window.chat_page
    send(qtbot, window, "# Waht is **Rust**?")
    assert titles(window) == ["Waht is Rust?"] and page.title.text() == "Waht is Rust?"
    page.edit_button.click()
    assert page.composer.toPlainText() == "# Waht is **Rust**?" and page.send_button.text() == "Resend"
    page.composer.setPlainText("What is *Rust*, `really`?")
    with qtbot.waitSignal(window.chat_controller.streaming_changed, timeout=10_000):
        page.send_button.click()
    qtbot.waitUntil(lambda: not window.chat_controller.streaming, timeout=10_000)
    assert titles(window) == ["What is Rust, really?"] and page.title.text() == "What is Rust, really?"


# ---- regenerate keeps versions ---------------------------------------------------------------------------------


def test_regenerate_keeps_every_version_and_the_arrows_flip_between_them(qtbot, window) -> None:
    page, controller = window.chat_page, window.chat_controller
    window.host.reply = "First answer."
    send(qtbot, window, "Say something")
    window.host.reply = "Second answer."
    with qtbot.waitSignal(controller.streaming_changed, timeout=10_000):
        page.regenerate_button.click()
    qtbot.waitUntil(lambda: not controller.streaming, timeout=10_000)
    shown = page.view.toPlainText()
    assert "Second answer." in shown and "First answer." not in shown and "2 / 2" in shown
    reply = controller.messages()[-1]
    page.view.anchorClicked.emit(QUrl(version_href(str(reply.id), -1)))  # the ‹ link
    shown = page.view.toPlainText()
    assert "First answer." in shown and "Second answer." not in shown and "1 / 2" in shown
    window.host.reply = "Third."
    send(qtbot, window, "Go on")
    history = [m.content for m in window.host.requests[-1].messages]
    assert history == ["Say something", "First answer.", "Go on"]  # the version on show is the one sent
    page.view.anchorClicked.emit(QUrl(version_href(str(reply.id), 1)))  # the › link
    assert [m.content for m in controller.messages()][1] == "Second answer."


# ---- keys --------------------------------------------------------------------------------------------------


def test_keyboard_shortcuts_and_their_tooltips(qtbot, window) -> None:
    page = window.chat_page
    assert "Ctrl+N" in page.conversations.new_button.toolTip()
    assert "Esc" in page.stop_button.toolTip() and "Ctrl+F" in page.conversations.search.placeholderText()
    send(qtbot, window, "hello")
    item_tip = page.conversations.list.item(0).toolTip()
    assert "F2 rename" in item_tip and "Del delete" in item_tip

    window.show_page("Images")
    qtbot.keyClick(window, Qt.Key_N, Qt.ControlModifier)
    assert window.stack.currentWidget() is page and page.title.text() == "New chat" and page.composer.hasFocus()

    qtbot.keyClick(page.composer, Qt.Key_F, Qt.ControlModifier)
    assert page.conversations.search.hasFocus()

    page.conversations.list.setCurrentRow(0)
    page.edit_button.click()
    assert page.cancel_edit_button.isVisible()
    qtbot.keyClick(page.composer, Qt.Key_Escape)
    assert not page.cancel_edit_button.isVisible() and page.composer.toPlainText() == ""

    qtbot.keyClick(window, Qt.Key_Q, Qt.ControlModifier)
    assert not window.isVisible() and window.chat_controller._shut_down


# ---- adding a model never blocks the window -------------------------------------------------------------------


def test_add_model_file_reads_the_file_off_the_gui_thread_even_a_fifo(qtbot, window, tmp_path, monkeypatch) -> None:
    import engines.library.importer as importer

    fifo = tmp_path / "x.gguf"
    os.mkfifo(fifo)
    threads: list[str] = []
    real_import = importer.import_model

    def spy(path, store):
        threads.append(threading.current_thread().name)
        return real_import(path, store)

    monkeypatch.setattr(importer, "import_model", spy)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(fifo), ""))
    done = threading.Event()

    def writer() -> None:  # should the reader block on the FIFO, feed it so the test ends either way
        while not done.wait(0.2):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            os.write(fd, b"not a model")
            os.close(fd)

    feeder = threading.Thread(target=writer, daemon=True)
    feeder.start()
    page = window.chat_page
    page.panel.add_button.click()
    assert page.status_line.text() == "Adding x.gguf…"  # the click returned before the file was read
    qtbot.waitUntil(lambda: page.banner.isVisible(), timeout=60_000)
    done.set()
    assert page.banner.text().startswith("Could not add that model: ")
    assert threads and threads[0] != threading.main_thread().name
    assert page.panel.model_combo.count() == 3  # nothing was added


# ---- every button, menu and action -------------------------------------------------------------------------


def test_every_button_menu_and_action_of_the_chat_page(qtbot, window, tmp_path, monkeypatch) -> None:
    page, controller, panel = window.chat_page, window.chat_controller, window.chat_page.panel
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: ("", ""))  # the user cancels
    exports = iter([tmp_path / "chat.md", tmp_path / "chat.json"])
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(next(exports)), ""))
    window.host.reply = "Here is code:\n\n```python\nprint('hi')\n```"

    page.conversations.new_button.click()
    send(qtbot, window, "Show me code")
    page.view.anchorClicked.emit(QUrl(copy_href(str(controller.messages()[-1].id), 0)))
    assert QApplication.clipboard().text() == "print('hi')"
    with qtbot.waitSignal(controller.streaming_changed, timeout=10_000):
        page.regenerate_button.click()
    qtbot.waitUntil(lambda: not controller.streaming, timeout=10_000)
    page.edit_button.click()
    page.cancel_edit_button.click()
    page.edit_button.click()
    page.composer.setPlainText("Show me more code")
    page.send_button.click()
    qtbot.waitUntil(lambda: not controller.streaming, timeout=10_000)

    window.host.reply = " ".join(f"w{i}" for i in range(400))
    window.host.delay = 0.02
    page.composer.setPlainText("long one")
    page.send_button.click()
    qtbot.waitUntil(lambda: page.stop_button.isVisible() and "w2" in page.view.toPlainText(), timeout=10_000)
    page.stop_button.click()
    qtbot.waitUntil(lambda: not controller.streaming, timeout=10_000)
    window.host.delay = 0

    for action, answer in (("Rename…", ("OK", "Renamed")), ("Export as Markdown…", None),
                           ("Export as JSON…", None), ("Delete…", ("Cancel", None))):
        choose_in_next_menu(action)
        if answer:
            answer_next_dialog(*answer)
        right_click(window, 0)
    assert titles(window) == ["Renamed"]
    assert (tmp_path / "chat.md").exists() and (tmp_path / "chat.json").exists()

    panel.add_button.click()  # cancelled: nothing happens
    panel.unload_button.click()
    assert page.status_line.text() == "Model unloaded; its memory was given back."
    panel.temperature.setValue(1.2)
    panel.random_seed.setChecked(False)
    panel.seed.setValue(42)
    panel.system_prompt.setPlainText("Be brief.")
    panel.cache_type.setCurrentIndex(1)
    panel.context.setValue(8192)
    panel.context.editingFinished.emit()
    chat = controller.store.get_conversation(controller.current_id)
    assert chat.system_prompt == "Be brief." and chat.sampling.temperature == 1.2 and chat.sampling.seed == 42
    panel.reset_button.click()
    assert controller.store.get_conversation(controller.current_id).sampling.temperature == 0.7
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("local/other"))
    assert controller.store.get_conversation(controller.current_id).model_id == "local/other"

    page.conversations.search.setText("nothing like this")
    assert page.conversations.empty_note.text() == "No chat matches your search."
    page.conversations.search.clear()

    window.host.overflow_unless_dropping = True  # the conversation no longer fits: both answers
    for button in ("Stop", "Drop oldest turns"):
        answer_next_dialog(button)
        send(qtbot, window, f"too long ({button})")
    assert "oldest 2 message" in page.view.toPlainText()

    visible = [b.text() for b in page.findChildren(QAbstractButton) if b.isVisible() and b.isEnabled()]
    assert {"+  New chat", "Send", "↻  Regenerate", "✎  Edit last", "Add model file…", "Unload",
            "Reset to defaults"} <= set(visible)


# ---- small windows -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_chat_page_fits_a_1024_by_640_window(qtbot, window, theme) -> None:
    from desktop.theme import apply_theme

    app = QApplication.instance()
    apply_theme(app, theme)
    try:
        window.resize(1024, 640)
        page = window.chat_page
        page._show_banner("The disk holding your chats is full (/home/someone/.local/share/Atelier), so the chat "
                          "could not be saved. Free some space; Atelier saves again as soon as it can.")
        page.edit_button.click()
        qtbot.waitUntil(lambda: window.width() == 1024, timeout=5000)
        QApplication.processEvents()
        assert window.width() == 1024 and window.height() == 640  # nothing forced the window to grow
        center = page.view.parentWidget()
        for button in center.findChildren(QAbstractButton):
            if button.isVisible():
                top_left = button.mapTo(window, QPoint(0, 0))
                assert button.width() >= button.sizeHint().width(), button.text()
                assert 0 <= top_left.x() and top_left.x() + button.width() <= 1024, button.text()
                assert top_left.y() + button.height() <= 640, button.text()
        for label in (page.banner, page.status_line):
            assert label.wordWrap() and label.mapTo(window, QPoint(0, 0)).x() + label.width() <= 1024
        assert page.view.height() >= 120  # the conversation keeps room to read
        assert isinstance(page.title, QLabel) and page.title.width() <= center.width()
    finally:
        apply_theme(app, "light")
