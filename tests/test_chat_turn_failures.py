"""A chat turn always ends, whatever fails: the engine, the disk, or the history file.

The store is the real ChatStore: on a real full disk (a small tmpfs, as
root), or with its one write path switched to fail (``FailingStore`` is a
subclass, so its interface is the real one by construction).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engines.api import TextLoadSpec
from engines.chat import ChatStore, ChatWriteError
from engines.chat.session import CLOSED_NOTICE, ChatTurn, save_unsaved
from tests.fixtures.fake_host import FakeHost
from tests.fixtures.tmpfs import fill, small_tmpfs

SPEC = TextLoadSpec("/models/fake.gguf", 2048)
WORDS = " ".join(f"word{i}" for i in range(300))


class FailingStore(ChatStore):
    """The real store, whose writes fail from the moment ``fail_writes`` is set (a full disk, made to order)."""

    fail_writes = False
    failure = "Injected: the disk holding your chats is full."

    def _write(self):
        if self.fail_writes:
            raise ChatWriteError(self.failure)
        return super()._write()


@pytest.fixture
def store(tmp_path: Path):
    with FailingStore(tmp_path / "atelier.sqlite3") as s:
        yield s


def asked(store: ChatStore, text: str = "Tell me a story") -> int:
    chat = store.create_conversation()
    store.add_message(chat.id, "user", text)
    return chat.id


def test_a_reply_that_cannot_start_ends_the_turn_before_the_engine_runs(store: FailingStore) -> None:
    chat = asked(store)
    host = FakeHost()
    store.fail_writes = True
    outcome = ChatTurn(store, host, chat, SPEC).run(lambda event: None)
    assert (outcome.reply_id, outcome.save_error, outcome.unsaved) == (None, FailingStore.failure, None)
    assert host.loads == [] and host.requests == []


def test_a_failed_save_mid_reply_stops_the_engine_and_keeps_the_text(store: FailingStore) -> None:
    chat = asked(store)
    host = FakeHost(WORDS, delay=0)
    seen: list[str] = []

    def on_event(event) -> None:
        seen.append(getattr(event, "text", ""))
        if sum(1 for t in seen if t) == 5:
            store.fail_writes = True  # the disk fills up after five tokens

    outcome = ChatTurn(store, host, chat, SPEC, save_interval=0).run(on_event)
    streamed = "".join(seen)
    assert outcome.save_error == FailingStore.failure
    assert outcome.unsaved.text == outcome.text and outcome.text.startswith(streamed)
    assert len(outcome.text.split()) < 300  # the turn stopped; it did not stream to the end into nowhere
    assert outcome.unsaved.status == "interrupted"
    assert outcome.unsaved.notice == f"Stopped here: the chat history could not be saved ({FailingStore.failure})"
    assert store.get_message(outcome.reply_id).status == "streaming"  # what the disk holds until the retry
    assert not save_unsaved(store, outcome.unsaved)
    store.fail_writes = False
    assert save_unsaved(store, outcome.unsaved)
    saved = store.get_message(outcome.reply_id)
    assert (saved.content, saved.status, saved.notice) == (outcome.text, "interrupted", outcome.unsaved.notice)


def test_a_failed_final_save_keeps_the_whole_reply_with_its_figures(store: FailingStore) -> None:
    chat = asked(store)
    host = FakeHost("Short and sweet.", delay=0)

    def on_event(event) -> None:
        if type(event).__name__ == "FinishedEvent":
            store.fail_writes = True

    outcome = ChatTurn(store, host, chat, SPEC, save_interval=3600).run(on_event)
    assert outcome.result.text == "Short and sweet." and outcome.error is None
    assert (outcome.unsaved.text, outcome.unsaved.status) == ("Short and sweet.", "complete")
    assert outcome.unsaved.stats["completion_tokens"] == 3
    store.fail_writes = False
    assert save_unsaved(store, outcome.unsaved)
    assert store.get_message(outcome.reply_id).stats["completion_tokens"] == 3


def test_an_engine_crash_while_the_disk_refuses_writes_still_ends_the_turn(store: FailingStore) -> None:
    chat = asked(store)
    host = FakeHost(WORDS, delay=0)
    host.crash_after = 4
    store.fail_writes = False

    def on_event(event) -> None:
        store.fail_writes = True  # the reply row exists; every later write fails

    outcome = ChatTurn(store, host, chat, SPEC, save_interval=3600).run(on_event)
    assert outcome.error.kind == "crashed" and outcome.save_error == FailingStore.failure
    assert (outcome.unsaved.text, outcome.unsaved.status) == ("word0 word1 word2 word3", "interrupted")


def test_a_reply_cut_by_closing_the_app_says_so(store: FailingStore) -> None:
    chat = asked(store)
    host = FakeHost(WORDS, delay=0)
    host.crash_after = 2  # killing the host looks like this from the turn's side
    closing = threading.Event()
    closing.set()
    outcome = ChatTurn(store, host, chat, SPEC, closing=closing).run(lambda event: None)
    reply = store.get_message(outcome.reply_id)
    assert (reply.content, reply.status, reply.notice) == ("word0 word1", "interrupted", CLOSED_NOTICE)
    assert outcome.error is None


def test_deleting_the_chat_mid_reply_ends_the_turn_quietly(store: FailingStore) -> None:
    chat = asked(store)
    host = FakeHost(WORDS, delay=0)
    tokens = []

    def on_event(event) -> None:
        tokens.append(event)
        if len(tokens) == 6:
            store.delete_conversation(chat)

    outcome = ChatTurn(store, host, chat, SPEC, save_interval=0).run(on_event)
    assert (outcome.error, outcome.save_error, outcome.unsaved) == (None, None, None)
    assert store.list_conversations() == []


def test_a_real_full_disk_mid_reply_ends_the_turn_and_the_reply_is_saved_once_there_is_room(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        store = ChatStore(disk / "atelier.sqlite3")
        chat = asked(store)
        host = FakeHost(" ".join("x" * 2000 for _ in range(2000)), delay=0)
        filler: list[Path] = []

        def on_event(event) -> None:
            if not filler:
                filler.append(fill(disk))

        outcome = ChatTurn(store, host, chat, SPEC, save_interval=0).run(on_event)
        full = (f"The disk holding your chats is full ({disk}), so the chat could not be saved. "
                "Free some space; Atelier saves again as soon as it can.")
        assert outcome.save_error == full
        assert outcome.unsaved.text == outcome.text and len(outcome.text) > 0
        assert len(host.requests) == 1
        filler[0].unlink()
        assert save_unsaved(store, outcome.unsaved)
        reply = store.get_message(outcome.reply_id)
        assert (reply.content, reply.status) == (outcome.text, "interrupted")
        assert reply.notice == f"Stopped here: the chat history could not be saved ({full})"
        store.close()


def test_stop_while_the_model_loads_ends_the_reply_as_cancelled_not_as_an_error(store: FailingStore) -> None:
    """The engine host reports a load stopped by the user as CANCELLED; the reply row says 'cancelled'."""
    from engines.errors import EngineError, ErrorKind

    class StoppedWhileLoading(FakeHost):
        def load(self, engine, spec, on_event=None):
            raise EngineError(ErrorKind.CANCELLED, "Loading fake.gguf was stopped.")

    chat = asked(store)
    outcome = ChatTurn(store, StoppedWhileLoading(), chat, SPEC).run(lambda event: None)
    reply = store.get_message(outcome.reply_id)
    assert (reply.content, reply.status, reply.notice) == ("", "cancelled", None)
    assert outcome.error.kind == ErrorKind.CANCELLED and outcome.save_error is None
