"""The conversation transcript: a read-only QTextBrowser fed rendered HTML.

Streaming replies are cheap: :meth:`MessageView.update_last` replaces only the
last message, by selecting from where it starts to the end of the document
with a QTextCursor and inserting the new HTML there. The whole document is
rebuilt only by :meth:`MessageView.set_messages` and theme changes.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QGuiApplication, QImage, QPalette, QTextCursor, QTextDocument
from PySide6.QtWidgets import QFrame, QTextBrowser, QTextEdit, QWidget

from desktop.chat.render import (
    MessageDisplay, RenderedMessage, Theme, parse_copy_href, parse_image_href, parse_version_href, render_empty_state,
    render_message,
)
from desktop.chat.citations import parse_source_href
from desktop.chat.tool_calls import parse_call_href, parse_tool_image_href

__all__ = ["MessageView"]

_PIN_SLACK_PX = 40  # "at the bottom" when within this many pixels of it
_CACHE_LIMIT = 2000  # rendered messages kept per theme
_MAX_COALESCE_MS = 500  # a coalesced streaming update waits at most this long
THUMBNAIL_PX = 200  # an attached image's longer side in the transcript


class MessageView(QTextBrowser):
    """Shows a conversation; emits ``copied(text)`` after a code block's Copy link,
    ``version_requested(key, step)`` after a reply's ‹ or › link."""

    copied = Signal(str)
    version_requested = Signal(str, int)  # message key, -1 or +1
    call_toggled = Signal(str, str)  # message key, tool call id: its result opened or folded
    source_clicked = Signal(str, str, int)  # action ("open" or "passage"), message key, source number

    def __init__(self, parent: QWidget | None = None, *, dark: bool = False) -> None:
        super().__init__(parent)
        self.setObjectName("MessageView")
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.setReadOnly(True)
        self.setUndoRedoEnabled(False)  # else every streaming update lands on the undo stack
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.setLineWrapMode(QTextEdit.LineWrapMode.WidgetWidth)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.document().setDocumentMargin(20)

        self._theme = Theme(dark=dark)
        self._cache: dict[tuple, RenderedMessage] = {}
        self._code: dict[str, list[str]] = {}  # message key -> its code blocks
        self._thumbs: dict[bytes, QImage] = {}  # an attached image's bytes -> its thumbnail
        self._messages: list[MessageDisplay] = []
        self._last_start: int | None = None  # document position where the last message begins
        self._empty: tuple[str, str] | None = None
        self._pinned = True
        self._updating = False
        # Coalescing of streaming updates that arrive faster than we can lay them out.
        self._pending: MessageDisplay | None = None
        self._last_cost_ms = 0.0
        self._last_done = 0.0
        self._flush_timer = QTimer(self, singleShot=True)
        self._flush_timer.timeout.connect(self.flush)

        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._on_scrolled)
        bar.rangeChanged.connect(self._on_range_changed)
        self.anchorClicked.connect(self._on_anchor_clicked)
        self._apply_palette()

    # ------------------------------------------------------------ public API
    @property
    def theme(self) -> Theme:
        return self._theme

    def messages(self) -> list[MessageDisplay]:
        """The messages shown (a coalesced streaming update counts as shown)."""
        shown = list(self._messages)
        if self._pending is not None:
            if shown and shown[-1].key == self._pending.key:
                shown[-1] = self._pending
            else:
                shown.append(self._pending)
        return shown

    def set_theme(self, dark: bool) -> None:
        """Switch light/dark and re-render everything shown."""
        if dark == self._theme.dark:
            return
        self._theme = Theme(dark=dark)
        self._cache.clear()
        self._apply_palette()
        if self._empty is not None:
            self.show_empty(*self._empty)
        else:
            self.set_messages(self.messages())

    def set_messages(self, messages: list[MessageDisplay]) -> None:
        """Replace the whole transcript (unchanged messages come from the cache)."""
        self._drop_pending()
        messages = list(messages)
        rendered = [self._render(m) for m in messages]
        with self._keeping_scroll():
            self._empty = None
            self._messages = messages
            self._code = {m.key: r.code_blocks for m, r in zip(messages, rendered)}
            self.setHtml("".join(r.html for r in rendered[:-1]))
            self._last_start = self._append(rendered[-1].html) if rendered else None

    def update_last(self, message: MessageDisplay) -> None:
        """Replace the last message if ``message`` has its key, else append it.

        While a very long reply streams, laying it out can take longer than the
        gap between updates; then streaming updates are coalesced (the newest
        is applied shortly after). Any other update is applied at once.
        """
        if self._pending is not None and self._pending.key != message.key:
            self.flush()
        if message.status == "streaming":
            wait_ms = 2 * self._last_cost_ms - (time.perf_counter() - self._last_done) * 1000
            if wait_ms >= 1:
                self._pending = message
                if not self._flush_timer.isActive():
                    self._flush_timer.start(int(min(wait_ms, _MAX_COALESCE_MS)))
                return
        self._drop_pending()
        started = time.perf_counter()
        self._replace_last(message)
        self._last_done = time.perf_counter()
        self._last_cost_ms = (self._last_done - started) * 1000

    def flush(self) -> None:
        """Apply a coalesced streaming update now, if one is waiting."""
        pending = self._pending
        self._drop_pending()
        if pending is not None:
            self._last_cost_ms = 0.0
            self.update_last(pending)

    def show_empty(self, title: str, body: str) -> None:
        """Show a friendly placeholder instead of a conversation."""
        self._drop_pending()
        with self._keeping_scroll():
            self._messages = []
            self._code = {}
            self._last_start = None
            self._empty = (title, body)
            self.setHtml(render_empty_state(self._theme, title, body))

    def is_pinned_to_bottom(self) -> bool:
        return self._pinned

    # -------------------------------------------------------------- internals
    def _replace_last(self, message: MessageDisplay) -> None:
        if self._empty is not None:
            self.set_messages([message])
            return
        replacing = bool(self._messages) and self._messages[-1].key == message.key
        if replacing and self._messages[-1] == message:
            return
        rendered = self._render(message)
        self._code[message.key] = rendered.code_blocks
        with self._keeping_scroll():
            if replacing and self._last_start is not None:
                self._messages[-1] = message
                cursor = QTextCursor(self.document())
                cursor.beginEditBlock()
                cursor.setPosition(self._last_start)
                cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
                cursor.removeSelectedText()
                cursor.insertHtml(rendered.html)
                cursor.endEditBlock()
            else:
                self._messages.append(message)
                self._last_start = self._append(rendered.html)

    def _drop_pending(self) -> None:
        self._flush_timer.stop()
        self._pending = None

    def loadResource(self, kind: int, url: QUrl):  # noqa: N802 (Qt naming)
        """An attached image's thumbnail, from the message's own bytes; nothing else is ever fetched."""
        tool_image = parse_tool_image_href(url.toString())
        if tool_image is not None and kind == QTextDocument.ResourceType.ImageResource.value:
            return self._tool_image(tool_image)
        target = parse_image_href(url.toString())
        if kind != QTextDocument.ResourceType.ImageResource.value or target is None:
            return None
        key, index = target
        message = next((m for m in self.messages() if m.key == key), None)
        if message is None or index >= len(message.images):
            return None
        data = message.images[index]
        thumb = self._thumbs.get(data)  # a rebuilt transcript (each new message) must not decode every photo again
        if thumb is None:
            image = QImage.fromData(data)
            if image.isNull():
                return None
            if len(self._thumbs) >= _CACHE_LIMIT:
                self._thumbs.clear()
            if max(image.width(), image.height()) > THUMBNAIL_PX:  # scaled down, never up
                image = image.scaled(THUMBNAIL_PX, THUMBNAIL_PX, Qt.AspectRatioMode.KeepAspectRatio,
                                     Qt.TransformationMode.SmoothTransformation)
            thumb = self._thumbs[data] = image
        return thumb

    def _tool_image(self, path: str):
        """An image a tool made (a gallery file), scaled like an attachment; None when it cannot be read."""
        image = QImage(path)
        limit = max(96, min(2 * THUMBNAIL_PX, self.viewport().width() - 110))  # within the reply's box
        if image.isNull() or max(image.width(), image.height()) <= limit:  # scaled down, never up
            return None if image.isNull() else image
        return image.scaled(limit, limit, Qt.AspectRatioMode.KeepAspectRatio,
                            Qt.TransformationMode.SmoothTransformation)

    def _render(self, msg: MessageDisplay) -> RenderedMessage:
        key = (msg.key, msg.role, msg.content, msg.status, msg.notice, msg.meta, msg.version, msg.versions,
               msg.images, msg.calls, msg.sources)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            hit = self._cache[key] = render_message(msg, self._theme)
        return hit

    def _append(self, html: str) -> int:
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        start = cursor.position()
        cursor.insertHtml(html)
        return start

    @contextmanager
    def _keeping_scroll(self) -> Iterator[None]:
        """Stay at the bottom if we were there; otherwise keep the user's place."""
        bar = self.verticalScrollBar()
        pinned = self._pinned or bar.value() >= bar.maximum() - _PIN_SLACK_PX
        value = bar.value()
        self._updating = True
        try:
            yield
        finally:
            self._pinned = pinned
            bar.setValue(bar.maximum() if pinned else value)
            self._updating = False

    def _on_scrolled(self, value: int) -> None:
        if not self._updating:
            self._pinned = value >= self.verticalScrollBar().maximum() - _PIN_SLACK_PX

    def _on_range_changed(self, _low: int, high: int) -> None:
        # Layout can finish after an update, and the window can resize: stay pinned.
        if self._pinned and not self._updating:
            self.verticalScrollBar().setValue(high)

    def _on_anchor_clicked(self, url: QUrl) -> None:
        href = url.toString(QUrl.ComponentFormattingOption.FullyEncoded)
        source = parse_source_href(href)
        if source is not None:
            self.source_clicked.emit(*source)
            return
        call = parse_call_href(href)
        if call is not None:
            self.call_toggled.emit(*call)
            return
        version = parse_version_href(href)
        if version is not None:
            self.version_requested.emit(*version)
            return
        target = parse_copy_href(href)
        if target is not None:
            key, index = target
            blocks = self._code.get(key, [])
            if 0 <= index < len(blocks):
                QGuiApplication.clipboard().setText(blocks[index])
                self.copied.emit(blocks[index])
        elif url.scheme().lower() in ("http", "https"):
            QDesktopServices.openUrl(url)

    def _apply_palette(self) -> None:
        t = self._theme
        palette = self.palette()
        for group in (QPalette.ColorGroup.Active, QPalette.ColorGroup.Inactive,
                      QPalette.ColorGroup.Disabled):
            palette.setColor(group, QPalette.ColorRole.Base, QColor(t.background))
            palette.setColor(group, QPalette.ColorRole.Text, QColor(t.text))
            palette.setColor(group, QPalette.ColorRole.Link, QColor(t.link))
        self.setPalette(palette)
        self.viewport().setAutoFillBackground(True)
