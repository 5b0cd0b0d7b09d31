"""desktop.chat.message_view.MessageView under pytest-qt (offscreen)."""
from __future__ import annotations

import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QUrl  # noqa: E402
from PySide6.QtGui import QDesktopServices, QGuiApplication, QTextCursor  # noqa: E402

from desktop.chat.message_view import MessageView  # noqa: E402
from desktop.chat.render import STREAM_CURSOR, MessageDisplay, Theme, copy_href  # noqa: E402

pytestmark = pytest.mark.gui

CODE = "def add(a, b):\n    # keep   spacing\n\treturn a + b  "
FINAL = ("Here is the plan. UNIQUE-OPENING\n\n- first step\n- second step\n\n"
         f"```python\n{CODE}\n```\n\n| col | val |\n|---|---|\n| x | 1 |\n\nAll done. UNIQUE-CLOSING")


@pytest.fixture
def view(qtbot):
    v = MessageView()
    qtbot.addWidget(v)
    v.resize(700, 400)
    v.show()
    return v


def conversation() -> list[MessageDisplay]:
    return [MessageDisplay("u1", "user", "How do I add two numbers?"),
            MessageDisplay("a1", "assistant", FINAL, meta="Gemma 3 270M · 34.1 tok/s")]


def anchors(view: MessageView) -> list[tuple[str, int]]:
    """(href, position) of every anchor in the document."""
    found = []
    block = view.document().begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            frag = it.fragment()
            if frag.charFormat().isAnchor():
                found.append((frag.charFormat().anchorHref(), frag.position()))
            it += 1
        block = block.next()
    return found


def test_set_messages_renders_text(view):
    view.set_messages(conversation())
    text = view.toPlainText()
    assert "You" in text and "How do I add two numbers?" in text
    assert "UNIQUE-OPENING" in text and "second step" in text and "Gemma 3 270M" in text
    assert "return a + b" in text
    assert view.isReadOnly() and view.openLinks() is False


def test_set_messages_reuses_cached_html(view, monkeypatch):
    view.set_messages(conversation())
    import desktop.chat.message_view as mv
    calls = []
    monkeypatch.setattr(mv, "render_message", lambda *a: calls.append(a))
    view.set_messages(conversation())
    assert calls == []


def test_streaming_updates_end_with_one_copy_of_the_final_text(view, qtbot):
    view.set_messages([MessageDisplay("u1", "user", "Plan please")])
    for end in range(0, len(FINAL), 5):
        view.update_last(MessageDisplay("a1", "assistant", FINAL[:end], status="streaming"))
    view.update_last(MessageDisplay("a1", "assistant", FINAL, meta="done"))
    text = view.toPlainText()
    assert text.count("UNIQUE-OPENING") == 1 and text.count("UNIQUE-CLOSING") == 1
    assert text.count("Assistant") == 1 and text.count("Plan please") == 1
    assert STREAM_CURSOR not in text
    # Exactly what a fresh full render of the same messages shows.
    fresh = MessageView()
    qtbot.addWidget(fresh)
    fresh.set_messages(view.messages())
    assert fresh.toPlainText() == text
    assert fresh.document().blockCount() == view.document().blockCount()


def test_update_last_appends_a_new_key(view):
    view.set_messages(conversation())
    view.update_last(MessageDisplay("u2", "user", "And subtract?"))
    view.update_last(MessageDisplay("a2", "assistant", "Use minus.", status="streaming"))
    view.update_last(MessageDisplay("a2", "assistant", "Use minus. SECOND-REPLY"))
    text = view.toPlainText()
    assert text.count("UNIQUE-CLOSING") == 1 and text.count("SECOND-REPLY") == 1
    assert [m.key for m in view.messages()] == ["u1", "a1", "u2", "a2"]


def test_slow_layout_coalesces_streaming_but_final_update_is_immediate(view, qtbot):
    view.set_messages([MessageDisplay("u1", "user", "q")])
    view._last_cost_ms = 10_000.0  # pretend the last layout was very slow
    view._last_done = time.perf_counter()
    view.update_last(MessageDisplay("a1", "assistant", "partial PENDING", status="streaming"))
    assert "PENDING" not in view.toPlainText()
    assert view.messages()[-1].content == "partial PENDING"
    qtbot.waitUntil(lambda: "PENDING" in view.toPlainText(), timeout=10_000)  # the timer flushes it
    view._last_cost_ms, view._last_done = 10_000.0, time.perf_counter()
    view.update_last(MessageDisplay("a1", "assistant", "partial PENDING more", status="streaming"))
    view.update_last(MessageDisplay("a1", "assistant", "FINAL-ANSWER"))
    assert "FINAL-ANSWER" in view.toPlainText() and "more" not in view.toPlainText()


def test_copy_link_copies_the_exact_code(view, qtbot):
    view.set_messages(conversation())
    hrefs = [h for h, _ in anchors(view) if h.startswith("copy:")]
    assert hrefs == [copy_href("a1", 0)]
    QGuiApplication.clipboard().clear()
    with qtbot.waitSignal(view.copied, timeout=10_000) as blocker:
        view.anchorClicked.emit(QUrl(hrefs[0]))
    assert blocker.args == [CODE]
    assert QGuiApplication.clipboard().text() == CODE


def test_clicking_the_copy_link_with_the_mouse(view, qtbot):
    from PySide6.QtCore import Qt
    view.set_messages([MessageDisplay("a:1 odd", "assistant", f"```python\n{CODE}\n```")])
    (href, pos), = [a for a in anchors(view) if a[0].startswith("copy:")]
    cursor = QTextCursor(view.document())
    cursor.setPosition(pos + 1)
    point = view.cursorRect(cursor).center()
    with qtbot.waitSignal(view.copied, timeout=10_000) as blocker:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=point)
    assert blocker.args == [CODE]


def test_links_open_only_for_http(view, monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url)))
    view.set_messages(conversation())
    for href in ("https://example.com/a", "http://x.org", "javascript:alert(1)", "file:///etc/passwd",
                 "copy:nokey:3", "relative/path"):
        view.anchorClicked.emit(QUrl(href))
    assert [u.toString() for u in opened] == ["https://example.com/a", "http://x.org"]


def test_dark_light_switch_rerenders(view):
    view.set_messages(conversation())
    light_html = view.toHtml()
    view.set_theme(True)
    assert view.theme == Theme(dark=True)
    dark_html = view.toHtml()
    assert dark_html != light_html
    assert Theme(dark=True).code_background in dark_html.lower()
    assert view.palette().base().color().name() == Theme(dark=True).background
    assert view.toPlainText().count("UNIQUE-CLOSING") == 1
    view.set_theme(False)
    assert Theme(dark=False).code_background in view.toHtml().lower()


def test_empty_state_then_first_message(view):
    view.show_empty("Start a conversation", "Ask anything.")
    assert "Start a conversation" in view.toPlainText()
    view.set_theme(True)
    assert "Start a conversation" in view.toPlainText()
    view.update_last(MessageDisplay("u1", "user", "hello there"))
    text = view.toPlainText()
    assert "hello there" in text and "Start a conversation" not in text


def test_auto_scroll_pins_to_bottom_but_respects_scrolling_up(view, qtbot):
    long_text = "\n\n".join(f"Paragraph {i} of a long reply." for i in range(80))
    view.set_messages([MessageDisplay("u1", "user", "long please")])
    view.update_last(MessageDisplay("a1", "assistant", long_text[:2000], status="streaming"))
    bar = view.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0)
    assert bar.value() == bar.maximum()
    view.update_last(MessageDisplay("a1", "assistant", long_text[:3000], status="streaming"))
    assert bar.value() == bar.maximum()
    bar.setValue(0)  # the user scrolls up to re-read
    assert not view.is_pinned_to_bottom()
    view.update_last(MessageDisplay("a1", "assistant", long_text, status="streaming"))
    assert bar.value() == 0
    bar.setValue(bar.maximum() - 10)  # back near the bottom: pinned again
    view.update_last(MessageDisplay("a1", "assistant", long_text + "\n\nmore"))
    assert bar.value() == bar.maximum()
