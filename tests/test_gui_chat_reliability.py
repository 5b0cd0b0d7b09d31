"""The Chat page when the history file or the disk fails: the real window, offscreen, real SQLite files.

Each test checks what the user sees (the banner, the view, the buttons,
the composer) and what is on disk afterwards. pytest-qt fails a test on
any exception raised in a slot.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
from pathlib import Path

import psutil
import pytest

from engines.chat import ChatStore
from engines.chat.records import SCHEMA_VERSION
from engines.chat.session import CLOSED_NOTICE
from engines.library.installed import InstalledModel
from engines.settings import LoadPrefs
from engines.workspace import open_workspace
from tests.fixtures.fake_host import FakeHost
from tests.fixtures.tmpfs import fill, read_only, small_tmpfs

pytestmark = pytest.mark.gui

PAGE = 4096
LONG_REPLY = " ".join(f"word{i}" for i in range(600))


def workspace_with_model(model_path: str = "/models/fake.gguf", name: str = "Fake model"):
    ws = open_workspace()
    model = ws.models.add(InstalledModel("local/fake", name, model_path, 1000, "llama_cpp", "gguf", "import", kind="chat"))
    ws.settings.last_model_id = model.id
    ws.save_settings()
    return ws


def open_window(qtbot, ws, host=None):
    from desktop.main_window import MainWindow
    from desktop.pages.chat_controller import ChatController

    win = MainWindow(ws, ChatController(ws, host=host or FakeHost()))
    qtbot.addWidget(win)
    win.show()
    return win


@pytest.fixture(autouse=True)
def no_models_page(monkeypatch):
    """The Models page has tests of its own; building it here would only add its work to every chat test."""
    from desktop.main_window import MainWindow

    monkeypatch.setattr(MainWindow, "ensure_models_page", lambda self: None)


def make_history(path: Path, chats: int) -> None:
    store = ChatStore(path)
    for i in range(chats):
        chat = store.create_conversation()
        store.add_message(chat.id, "user", f"question {i} " + "x" * 3000)
        reply = store.begin_reply(chat.id)
        store.finish_reply(reply, f"answer {i} " + "y" * 3000, "complete")
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def damage(path: Path, page: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek((page - 1) * PAGE)
        handle.write(os.urandom(PAGE))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def send(qtbot, win, text: str) -> None:
    page = win.chat_page
    page.composer.setPlainText(text)
    with qtbot.waitSignal(win.chat_controller.streaming_changed, timeout=10_000):
        page.send_button.click()


def wait_idle(qtbot, win) -> None:
    qtbot.waitUntil(lambda: not win.chat_controller.streaming, timeout=60_000)


# ---- start-up with a history that cannot be used ---------------------------------------------------------


def test_a_garbage_history_opens_the_window_and_says_so(qtbot, atelier_home: Path) -> None:
    db = atelier_home / "data" / "atelier.sqlite3"
    db.parent.mkdir(parents=True)
    db.write_bytes(os.urandom(10 * PAGE))
    garbage = digest(db)
    win = open_window(qtbot, workspace_with_model())
    notice = win.chat_page.history_notice
    assert notice.isVisible() and notice.recover_button.isVisible()
    assert notice.text.text().startswith("Your chat history could not be read: the file is damaged "
                                         "(file is not a database). It was set aside as atelier.unreadable-")
    aside = win.chat_controller.history_problem.set_aside
    assert digest(aside) == garbage  # set aside, never deleted
    send(qtbot, win, "still works")
    wait_idle(qtbot, win)
    assert [m.role for m in win.chat_controller.messages()] == ["user", "assistant"]
    notice.recover_button.click()
    qtbot.waitUntil(lambda: "Nothing could be read" in notice.text.text(), timeout=60_000)
    assert notice.text.text() == (f"Nothing could be read from {aside.name}: the file is too damaged. "
                                  "It stays where it is.")
    assert not notice.recover_button.isVisible()


def test_recover_brings_the_readable_chats_of_a_set_aside_history_back(qtbot, atelier_home: Path) -> None:
    db = atelier_home / "data" / "atelier.sqlite3"
    db.parent.mkdir(parents=True)
    make_history(db, 12)
    raw = sqlite3.connect(db)
    (index_page,) = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 'messages_by_status'").fetchone()
    raw.close()
    damage(db, index_page)  # the index start-up reads is damaged; every message row is still readable
    win = open_window(qtbot, workspace_with_model())
    page = win.chat_page
    assert page.history_notice.isVisible() and page.conversations.list.count() == 0
    page.history_notice.recover_button.click()
    qtbot.waitUntil(lambda: page.history_notice.text.text().startswith("Recovered"), timeout=60_000)
    assert page.history_notice.text.text().startswith("Recovered 12 chats with 24 messages from atelier.unreadable-")
    assert page.history_notice.text.text().endswith(".sqlite3. The damaged file stays where it is.")
    assert page.conversations.list.count() == 12
    page.conversations.list.setCurrentRow(0)
    assert "question 11 xxx" in page.view.toPlainText() and "answer 11 yyy" in page.view.toPlainText()


def test_a_history_from_a_newer_atelier_is_read_only_and_left_unchanged(qtbot, atelier_home: Path) -> None:
    db = atelier_home / "data" / "atelier.sqlite3"
    db.parent.mkdir(parents=True)
    make_history(db, 2)
    from engines.images.gallery import Gallery

    Gallery(db, atelier_home / "data" / "images").close()  # a newer Atelier's file has the gallery's table too
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA user_version = 9")
    raw.commit()
    raw.close()
    before = digest(db)
    win = open_window(qtbot, workspace_with_model())
    page = win.chat_page
    assert page.history_notice.isVisible() and not page.history_notice.recover_button.isVisible()
    assert "was written by a newer version of Atelier (schema 9" in page.history_notice.text.text()
    assert page.conversations.list.count() == 2 and "answer 1 yyy" in page.view.toPlainText()
    page.composer.setPlainText("hello")
    page.send_button.click()
    assert not win.chat_controller.streaming
    assert page.banner.text() == (
        f"Your message was not sent because it could not be saved. The chat history at {db} was written by a "
        f"newer version of Atelier (schema 9, this version knows {SCHEMA_VERSION}). This version does not change it. "
        "It is still in the message box.")
    assert page.composer.toPlainText() == "hello"
    win.close()
    assert digest(db) == before


def test_a_folder_in_place_of_the_history_is_moved_aside_and_chat_works(qtbot, atelier_home: Path) -> None:
    db = atelier_home / "data" / "atelier.sqlite3"
    db.mkdir(parents=True)
    win = open_window(qtbot, workspace_with_model())
    notice = win.chat_page.history_notice
    assert notice.isVisible() and not notice.recover_button.isVisible()
    assert notice.text.text().startswith(f"Your chat history could not be read: {db} is a folder, not a file.")
    notice.dismiss_button.click()
    assert not notice.isVisible()
    send(qtbot, win, "hello")
    wait_idle(qtbot, win)
    assert db.is_file()


# ---- a damaged page inside the history (D13) -----------------------------------------------------------------


def test_an_unreadable_chat_says_so_instead_of_showing_another(qtbot, atelier_home: Path) -> None:
    db = atelier_home / "data" / "atelier.sqlite3"
    db.parent.mkdir(parents=True)
    make_history(db, 30)
    damage(db, 20)
    win = open_window(qtbot, workspace_with_model())
    page, controller = win.chat_page, win.chat_controller
    unreadable = []
    for chat in controller.conversations():
        page.conversations.show_current(chat.id)
        page._select(chat.id)
        text = page.view.toPlainText()
        if "This chat cannot be read" in text:
            unreadable.append(chat.id)
            assert text.strip().splitlines() == [
                "This chat cannot be read",
                f"Part of the chat history ({db}) is damaged and cannot be read.",
                "Your other chats are not affected."]
            assert "question" not in text
        else:
            number = int(chat.title.split()[1])
            assert f"question {number} x" in text and f"answer {number} y" in text
    assert len(unreadable) == 1
    page.conversations.search.setText("yyy")  # the search reads every message: the damaged page too
    assert page.banner.text() == ("Only chat titles were searched: "
                                  f"Part of the chat history ({db}) is damaged and cannot be read.")
    assert page.conversations.list.count() == 0
    page.conversations.search.setText("question 7")
    assert page.conversations.list.count() == 1


# ---- writes that fail while the app runs (D2, D14) -------------------------------------------------------------


def test_a_full_disk_mid_reply_ends_the_turn_keeps_the_text_and_saves_it_later(qtbot, atelier_home: Path) -> None:
    with small_tmpfs(atelier_home, "8m"):
        ws = workspace_with_model()
        host = FakeHost(LONG_REPLY, delay=0.01)
        win = open_window(qtbot, ws, host)
        page, controller = win.chat_page, win.chat_controller
        filler: list[Path] = []

        def fill_once(_conversation, text) -> None:
            if not filler and len(text) > 40:
                filler.append(fill(atelier_home))

        controller.stream_text.connect(fill_once)
        send(qtbot, win, "Tell me a long story")
        wait_idle(qtbot, win)
        full = (f"The disk holding your chats is full ({atelier_home / 'data'}), so the chat could not be saved. "
                "Free some space; Atelier saves again as soon as it can.")
        assert page.banner.text() == f"{full} The reply is kept here and saved as soon as possible."
        assert page.send_button.isVisible() and not page.stop_button.isVisible()
        (unsaved,) = controller.unsaved_replies
        assert 0 < len(unsaved.text.split()) < 600
        shown = page.view.toPlainText()
        assert unsaved.text.split()[-1] in shown and "Not saved yet: Atelier keeps this reply" in shown

        page.composer.setPlainText("And then?")  # still full: the question is not sent, and not lost
        page.send_button.click()
        assert not controller.streaming and page.composer.toPlainText() == "And then?"
        assert page.banner.text() == (f"Your message was not sent because it could not be saved. {full} "
                                      "It is still in the message box.")

        filler[0].unlink()
        host.reply = "The end."
        send(qtbot, win, "And then?")
        wait_idle(qtbot, win)
        assert controller.unsaved_replies == [] and not page.banner.isVisible()
        win.close()
        with ChatStore(atelier_home / "data" / "atelier.sqlite3") as store:
            (chat,) = store.list_conversations()
            messages = store.messages(chat.id)
        assert [(m.role, m.status) for m in messages] == [
            ("user", "complete"), ("assistant", "interrupted"), ("user", "complete"), ("assistant", "complete")]
        assert messages[1].content == unsaved.text and messages[3].content == "The end."


def test_a_history_made_read_only_keeps_the_typed_message_and_says_why(qtbot, atelier_home: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the open history is made unwritable with chattr +i, which needs root")
    win = open_window(qtbot, workspace_with_model())
    send(qtbot, win, "first")
    wait_idle(qtbot, win)
    db = atelier_home / "data" / "atelier.sqlite3"
    page = win.chat_page
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    with read_only(*files):
        page.composer.setPlainText("second, typed with care")
        page.send_button.click()
        assert not win.chat_controller.streaming
        assert page.composer.toPlainText() == "second, typed with care"
        assert page.banner.text() == (
            f"Your message was not sent because it could not be saved. The chat history ({db}) is read-only, so "
            "nothing new can be saved. Check the file's permissions. It is still in the message box.")
    send(qtbot, win, page.composer.toPlainText())
    wait_idle(qtbot, win)
    assert [m.content for m in win.chat_controller.messages() if m.role == "user"] == [
        "first", "second, typed with care"]


def test_the_worker_reports_finished_even_when_its_connection_cannot_open(qtbot, atelier_home: Path) -> None:
    win = open_window(qtbot, workspace_with_model())
    controller = win.chat_controller

    def broken():
        raise sqlite3.OperationalError("unable to open database file")

    controller.worker._store_factory = broken
    send(qtbot, win, "hello")
    wait_idle(qtbot, win)
    assert win.chat_page.banner.text() == "unable to open database file"
    assert win.chat_page.send_button.isVisible()


# ---- closing while the engine host no longer answers (D26) -------------------------------------------------


@pytest.mark.slow
def test_closing_while_the_engine_host_is_stuck_ends_it_and_saves_the_reply_interrupted(
        qtbot, atelier_home: Path, tiny_gguf: Path) -> None:
    ws = workspace_with_model(str(tiny_gguf), "Tiny")
    ws.settings.load_prefs["local/fake"] = LoadPrefs(threads=1)  # tiny model: 1 thread is faster
    ws.save_settings()
    from desktop.main_window import MainWindow

    win = MainWindow(ws)  # the real engine host and llama.cpp
    qtbot.addWidget(win)
    win.show()
    controller = win.chat_controller
    win.chat_page.panel.max_tokens.setValue(8)  # the new chat takes the panel's settings
    send(qtbot, win, "hello")
    wait_idle(qtbot, win)
    assert controller.messages()[-1].status in ("complete", "cancelled"), win.chat_page.banner.text()
    host_pid = controller.worker.host.pid
    os.kill(host_pid, signal.SIGSTOP)  # the host stops answering, as a hung engine would
    send(qtbot, win, "and again")
    win.close()
    assert controller.worker_stopped  # the worker's turn ended, so its connection was closed after it
    assert not psutil.pid_exists(host_pid) or psutil.Process(host_pid).status() == psutil.STATUS_ZOMBIE
    with ChatStore(atelier_home / "data" / "atelier.sqlite3") as store:
        (chat,) = store.list_conversations()
        last = store.messages(chat.id)[-1]
    assert (last.role, last.status, last.notice) == ("assistant", "interrupted", CLOSED_NOTICE)
