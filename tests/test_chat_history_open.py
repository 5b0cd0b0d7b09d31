"""Opening the chat history whatever state its file is in, and recovering what a damaged file still holds.

Real SQLite files throughout: torn and garbage files, a folder in the
file's place, a file from a newer schema, a read-only file, a damaged page
inside an otherwise good file, and two processes writing at once.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engines.chat import SCHEMA_VERSION, ChatReadError, ChatStore, ChatWriteError
from engines.chat.opening import open_history
from engines.chat.salvage import salvage
from tests.fixtures.tmpfs import read_only

REPO = Path(__file__).resolve().parents[1]
PAGE = 4096


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "atelier.sqlite3"


def make_history(path: Path, chats: int = 30, filler: int = 3000) -> None:
    """A history of ``chats`` chats, each a long question and answer, with the WAL folded into the file."""
    store = ChatStore(path)
    for i in range(chats):
        chat = store.create_conversation()
        store.add_message(chat.id, "user", f"question {i} " + "x" * filler)
        reply = store.begin_reply(chat.id)
        store.finish_reply(reply, f"answer {i} " + "y" * filler, "complete", stats={"seed": i})
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def damage_page(path: Path, page: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek((page - 1) * PAGE)
        handle.write(os.urandom(PAGE))


def aside_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if ".unreadable-" in p.name)


# ---- what start-up does with each kind of file -----------------------------------------------------------


def test_a_good_history_opens_normally_and_marks_crashed_replies_interrupted(db: Path) -> None:
    store = ChatStore(db)
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "Write a poem")
    reply = store.begin_reply(chat.id)
    store.update_reply(reply, "Roses are red,")
    store.close()  # the app dies mid-reply
    opened, problem = open_history(db)
    with opened:
        assert problem is None and opened.writable
        assert [(m.status, m.content) for m in opened.messages(chat.id)] == [
            ("complete", "Write a poem"), ("interrupted", "Roses are red,")]


def test_a_torn_file_is_set_aside_with_its_wal_and_a_fresh_history_opens(db: Path) -> None:
    make_history(db, chats=10)
    db.write_bytes(db.read_bytes()[: 2 * PAGE])  # torn mid-write
    torn = digest(db)
    store, problem = open_history(db)
    with store:
        assert problem is not None and problem.recoverable
        assert problem.message.startswith("Your chat history could not be read: the file is damaged "
                                          "(database disk image is malformed). It was set aside as atelier.unreadable-")
        assert problem.message.endswith(", and new chats go into a fresh history. "
                                        "Atelier can recover what is still readable in it.")
        assert problem.set_aside.parent == db.parent and digest(problem.set_aside) == torn  # moved, never changed
        assert store.writable and store.list_conversations() == []
        chat = store.create_conversation()
        store.add_message(chat.id, "user", "life goes on")
    assert ChatStore(db).list_conversations()[0].title == "life goes on"


def test_garbage_is_set_aside_and_recovery_says_nothing_could_be_read(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(os.urandom(9 * PAGE))
    store, problem = open_history(db)
    with store:
        assert "the file is damaged (file is not a database)" in problem.message
        report = salvage(problem.set_aside, store)
        assert (report.conversations, report.messages) == (0, 0)
        assert report.summary() == (f"Nothing could be read from {problem.set_aside.name}: the file is too damaged. "
                                    "It stays where it is.")
        assert problem.set_aside.exists()


def test_a_folder_in_place_of_the_file_is_moved_aside_whole(db: Path) -> None:
    db.mkdir(parents=True)
    (db / "something.txt").write_text("mine", encoding="utf-8")
    store, problem = open_history(db)
    with store:
        assert problem.message.startswith(f"Your chat history could not be read: {db} is a folder, not a file. "
                                          "It was set aside as atelier.unreadable-")
        assert not problem.recoverable
        assert (problem.set_aside / "something.txt").read_text(encoding="utf-8") == "mine"
        assert db.is_file() and store.writable


def test_a_newer_schema_is_shown_read_only_and_never_written(db: Path) -> None:
    make_history(db, chats=2)
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    raw.commit()
    raw.close()
    before = digest(db)
    store, problem = open_history(db)
    with store:
        assert problem.message == (
            f"The chat history at {db} was written by a newer version of Atelier (schema {SCHEMA_VERSION + 5}, "
            f"this version knows {SCHEMA_VERSION}). It is shown read-only and left unchanged; "
            "update Atelier to chat in it again.")
        assert problem.set_aside is None and aside_files(db) == []
        chats = store.list_conversations()
        assert [c.title for c in chats] == ["question 1 " + "x" * 36 + "…", "question 0 " + "x" * 36 + "…"]
        assert [m.role for m in store.messages(chats[0].id)] == ["user", "assistant"]
        with pytest.raises(ChatWriteError, match="written by a newer version of Atelier .* This version does not change it"):
            store.add_message(chats[0].id, "user", "hello")
        with pytest.raises(ChatWriteError):
            store.create_conversation()
    assert digest(db) == before


def test_a_read_only_file_is_shown_read_only(db: Path) -> None:
    make_history(db, chats=2)
    with read_only(db):
        store, problem = open_history(db)
        with store:
            assert problem.message == (f"The chat history ({db}) is read-only, so nothing new can be saved. "
                                       "Check the file's permissions. Your chats are shown read-only.")
            assert aside_files(db) == []
            chat = store.list_conversations()[0]
            assert store.messages(chat.id)[1].content.startswith("answer 1 ")
            with pytest.raises(ChatWriteError, match=r"is read-only, so nothing new can be saved"):
                store.add_message(chat.id, "user", "hello")


def test_an_unusable_folder_gives_an_empty_history_that_refuses_writes(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data folder should be", encoding="utf-8")
    store, problem = open_history(tmp_path / "data" / "atelier.sqlite3")
    with store:
        assert problem.message.startswith(f"Your chats cannot be opened: {tmp_path / 'data'} cannot be used: ")
        assert problem.message.endswith("New chats cannot be saved until this is fixed.")
        assert store.list_conversations() == [] and not store.writable
        with pytest.raises(ChatWriteError, match="Your chats cannot be opened"):
            store.create_conversation()


# ---- a damaged page inside a good file ---------------------------------------------------------------------


def test_a_damaged_page_makes_one_chat_unreadable_not_the_history(db: Path) -> None:
    make_history(db)
    damage_page(db, 20)
    store, problem = open_history(db)
    with store:
        assert problem is None  # the list reads: the app starts as usual
        readable, unreadable = [], []
        for chat in store.list_conversations():
            try:
                store.messages(chat.id)
                readable.append(chat.id)
            except ChatReadError as exc:
                assert str(exc) == f"Part of the chat history ({db}) is damaged and cannot be read."
                unreadable.append(chat.id)
        assert len(unreadable) == 1 and len(readable) == 29
        assert [c.id for c in store.list_conversations("question 5", titles_only=True)] == [6]


def test_recovery_brings_back_every_readable_chat_and_leaves_the_damaged_file_alone(db: Path, tmp_path: Path) -> None:
    make_history(db)
    damage_page(db, 20)
    before = digest(db)
    live = ChatStore(tmp_path / "live" / "atelier.sqlite3")
    mine = live.create_conversation("Written since the damage")
    report = salvage(db, live)
    assert digest(db) == before
    assert (report.conversations, report.messages) == (30, 59)  # one message sat on the damaged page
    assert report.summary() == ("Recovered 30 chats with 59 messages from atelier.sqlite3. "
                                "The damaged file stays where it is.")
    chats = live.list_conversations()
    assert len(chats) == 31 and mine.id in {c.id for c in chats}
    # every chat but the one whose message sat on the damaged page (which one depends on the schema's page layout)
    whole = [c for c in chats if c.title.startswith("question ") and len(live.messages(c.id)) == 2]
    assert len(whole) == 29
    for chat in whole:
        number = int(chat.title.split()[1])
        user, answer = live.messages(chat.id)
        assert user.content == f"question {number} " + "x" * 3000 and answer.content == f"answer {number} " + "y" * 3000
        assert answer.stats == {"seed": number} and [user.position, answer.position] == [0, 1]
    live.close()


def test_recovery_also_brings_back_the_gallery_index(db: Path, tmp_path: Path) -> None:
    from engines.images.gallery import Gallery

    make_history(db, chats=3)
    gallery = Gallery(db, tmp_path / "images")
    entry = gallery.save(b"\x89PNG", {"prompt": "a fox", "steps": 4}, seed=9, width=8, height=8, model="m",
                         backend="torch")
    gallery.close()
    live_path = tmp_path / "live" / "atelier.sqlite3"
    live = ChatStore(live_path)
    report = salvage(db, live)
    assert (report.conversations, report.other_rows) == (3, 1)
    assert report.summary() == ("Recovered 3 chats with 6 messages and 1 gallery entry from atelier.sqlite3. "
                                "The damaged file stays where it is.")
    again = Gallery(live_path, tmp_path / "images")
    assert [(e.id, e.prompt, e.seed) for e in again.list()] == [(entry.id, "a fox", 9)]
    again.close()
    live.close()


def test_recovery_into_a_read_only_history_is_refused(db: Path) -> None:
    make_history(db, chats=1)
    newer = ChatStore.unavailable("Your chats cannot be opened: no disk.")
    with pytest.raises(ChatWriteError, match="Your chats cannot be opened: no disk."):
        salvage(db, newer)


# ---- sharing the file between processes ----------------------------------------------------------------------


def test_the_store_uses_wal_and_waits_for_other_writers(db: Path) -> None:
    with ChatStore(db) as store:
        assert store.journal_mode == "wal"
        assert store.busy_timeout_ms == 10_000


def test_two_processes_write_the_history_at_once_and_nothing_is_lost(db: Path) -> None:
    ChatStore(db).close()
    script = textwrap.dedent(f"""
        import sys
        from engines.chat import ChatStore
        store = ChatStore({str(db)!r})
        chat = store.create_conversation(sys.argv[1])
        for i in range(150):
            store.add_message(chat.id, "user", f"{{sys.argv[1]}} {{i}}")
        store.close()
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [subprocess.Popen([sys.executable, "-c", script, name], cwd=REPO, env=env, stderr=subprocess.PIPE,
                                text=True) for name in ("gui", "cli")]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    with ChatStore(db) as store:
        counts = {c.title: len(store.messages(c.id)) for c in store.list_conversations()}
    assert counts == {"gui": 150, "cli": 150}
