"""The chat history store, on real SQLite files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from engines.api import SamplingParams
from engines.chat import (
    DEFAULT_TITLE,
    SCHEMA_VERSION,
    ChatNotFound,
    ChatStore,
    ChatStoreError,
    auto_title_from,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "atelier.sqlite3"


@pytest.fixture
def store(db_path: Path):
    with ChatStore(db_path) as s:
        yield s


def test_new_file_is_migrated_to_current_schema(db_path: Path) -> None:
    with ChatStore(db_path) as store:
        assert store.schema_version() == SCHEMA_VERSION >= 1
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"conversations", "messages"} <= tables
    finally:
        db.close()


def test_empty_existing_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite3"
    path.touch()
    with ChatStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.list_conversations() == []


def test_newer_schema_is_refused(db_path: Path) -> None:
    ChatStore(db_path).close()
    db = sqlite3.connect(db_path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(ChatStoreError, match="newer version"):
        ChatStore(db_path)


def test_create_and_get(store: ChatStore) -> None:
    sampling = SamplingParams(temperature=0.2, seed=7)
    chat = store.create_conversation("Plans", model_id="gemma", system_prompt="Be brief.", sampling=sampling)
    assert chat.title == "Plans" and chat.model_id == "gemma"
    assert chat.system_prompt == "Be brief." and chat.sampling == sampling
    assert chat.created_at == chat.updated_at
    assert store.get_conversation(chat.id) == chat
    default = store.create_conversation()
    assert default.title == DEFAULT_TITLE and default.sampling is None and default.model_id is None
    with pytest.raises(ChatNotFound):
        store.get_conversation(9999)


def test_list_orders_by_most_recent_change(store: ChatStore) -> None:
    a = store.create_conversation("A")
    b = store.create_conversation("B")
    c = store.create_conversation("C")
    assert [x.id for x in store.list_conversations()] == [c.id, b.id, a.id]
    store.add_message(a.id, "user", "hello")
    assert store.list_conversations()[0].id == a.id
    store.rename_conversation(b.id, "B2")
    assert [x.id for x in store.list_conversations()] == [b.id, a.id, c.id]


def test_search_title_and_content_ignoring_case(store: ChatStore) -> None:
    a = store.create_conversation("Rust lifetimes")
    b = store.create_conversation("Dinner")
    store.add_message(b.id, "user", "A recipe with RUST-coloured peppers?")
    c = store.create_conversation("Other")
    store.add_message(c.id, "user", "Éclair recipe")
    assert {x.id for x in store.list_conversations("rust")} == {a.id, b.id}
    assert [x.id for x in store.list_conversations("lifetimes")] == [a.id]
    assert [x.id for x in store.list_conversations("éCLAIR")] == [c.id]
    assert store.list_conversations("nothing like this") == []
    assert len(store.list_conversations("   ")) == 3


def test_search_treats_wildcards_literally(store: ChatStore) -> None:
    pct = store.create_conversation("Growth of 50% a year")
    under = store.create_conversation("Other")
    store.add_message(under.id, "user", "rename my_var please")
    plain = store.create_conversation("50 percent and myXvar")
    backslash = store.create_conversation(r"C:\temp path")
    assert [x.id for x in store.list_conversations("50%")] == [pct.id]
    assert [x.id for x in store.list_conversations("my_var")] == [under.id]
    assert [x.id for x in store.list_conversations("%")] == [pct.id]
    assert [x.id for x in store.list_conversations("_")] == [under.id]
    assert [x.id for x in store.list_conversations("\\t")] == [backslash.id]
    assert plain.id not in {x.id for x in store.list_conversations("my_var")}


def test_rename_model_prompt_and_load_options(store: ChatStore) -> None:
    chat = store.create_conversation()
    store.rename_conversation(chat.id, "Renamed")
    store.set_conversation_model(chat.id, "models/x.gguf")
    store.set_system_prompt(chat.id, "You are terse.")
    store.set_load_options(chat.id, {"context_length": 8192, "gpu_layers": None})
    got = store.get_conversation(chat.id)
    assert got.title == "Renamed" and got.model_id == "models/x.gguf"
    assert got.system_prompt == "You are terse."
    assert got.load_options == {"context_length": 8192, "gpu_layers": None}
    assert got.updated_at >= chat.updated_at
    store.set_conversation_model(chat.id, None)
    assert store.get_conversation(chat.id).model_id is None
    with pytest.raises(ChatNotFound):
        store.rename_conversation(12345, "x")


def test_sampling_round_trip(store: ChatStore) -> None:
    chat = store.create_conversation()
    assert store.get_sampling(chat.id) == SamplingParams()
    custom = SamplingParams(temperature=1.3, top_p=0.8, top_k=0, min_p=0.0, repeat_penalty=1.0, max_tokens=77, seed=42)
    store.set_sampling(chat.id, custom)
    assert store.get_sampling(chat.id) == custom
    assert store.get_conversation(chat.id).sampling == custom
    store.set_sampling(chat.id, None)
    assert store.get_conversation(chat.id).sampling is None
    assert store.get_sampling(chat.id) == SamplingParams()


def test_sampling_tolerates_unknown_and_missing_keys(store: ChatStore, db_path: Path) -> None:
    chat = store.create_conversation()
    raw = sqlite3.connect(db_path)
    raw.execute(
        "UPDATE conversations SET sampling_json = ? WHERE id = ?",
        ('{"temperature": 0.3, "from_the_future": 1}', chat.id),
    )
    raw.commit()
    raw.close()
    assert store.get_sampling(chat.id) == SamplingParams(temperature=0.3)


def test_messages_positions_and_roles(store: ChatStore) -> None:
    chat = store.create_conversation()
    m0 = store.add_message(chat.id, "system", "sys")
    m1 = store.add_message(chat.id, "user", "hi")
    m2 = store.add_message(chat.id, "assistant", "hello")
    assert [m.position for m in (m0, m1, m2)] == [0, 1, 2]
    listed = store.messages(chat.id)
    assert [(m.role, m.content, m.status) for m in listed] == [
        ("system", "sys", "complete"),
        ("user", "hi", "complete"),
        ("assistant", "hello", "complete"),
    ]
    assert listed[1].to_chat_message().content == "hi"
    with pytest.raises(ValueError):
        store.add_message(chat.id, "robot", "x")
    with pytest.raises(ValueError):
        store.add_message(chat.id, "user", "x", status="weird")  # type: ignore[arg-type]
    with pytest.raises(ChatNotFound):
        store.add_message(9999, "user", "x")


def test_first_user_message_sets_title(store: ChatStore) -> None:
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "\n  How do I   parse JSON in Python?\nDetails follow")
    assert store.get_conversation(chat.id).title == "How do I parse JSON in Python?"
    store.add_message(chat.id, "user", "Second question")
    assert store.get_conversation(chat.id).title == "How do I parse JSON in Python?"
    named = store.create_conversation("Mine")
    store.add_message(named.id, "user", "Something else")
    assert store.get_conversation(named.id).title == "Mine"


def test_auto_title_from() -> None:
    assert auto_title_from("Hello there") == "Hello there"
    assert auto_title_from("   \n\n") == DEFAULT_TITLE
    long = "word " * 30
    title = auto_title_from(long)
    assert len(title) <= 48 and title.endswith("…") and not title.endswith(" …")
    no_spaces = "x" * 100
    assert auto_title_from(no_spaces) == "x" * 47 + "…"


def test_streaming_reply_lifecycle(store: ChatStore) -> None:
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "Count to three")
    reply_id = store.begin_reply(chat.id)
    reply = store.get_message(reply_id)
    assert (reply.role, reply.content, reply.status, reply.position) == ("assistant", "", "streaming", 1)
    store.update_reply(reply_id, "One,")
    store.update_reply(reply_id, "One, two,")
    assert store.get_message(reply_id).content == "One, two,"
    assert store.get_message(reply_id).status == "streaming"
    stats = {"prompt_tokens": 12, "completion_tokens": 5, "tokens_per_second": 31.5, "seed": 3}
    done = store.finish_reply(reply_id, "One, two, three.", "complete", stats=stats, notice="1 turn dropped")
    assert (done.content, done.status, done.stats, done.notice) == ("One, two, three.", "complete", stats, "1 turn dropped")
    assert store.get_conversation(chat.id).updated_at >= done.updated_at
    with pytest.raises(ValueError):
        store.finish_reply(reply_id, "x", "streaming")  # type: ignore[arg-type]
    with pytest.raises(ChatNotFound):
        store.update_reply(424242, "x")


def test_cancelled_and_error_replies(store: ChatStore) -> None:
    chat = store.create_conversation()
    a = store.begin_reply(chat.id)
    store.finish_reply(a, "Partial", "cancelled")
    b = store.begin_reply(chat.id)
    store.finish_reply(b, "", "error", notice="The engine stopped unexpectedly.")
    assert [(m.status, m.notice) for m in store.messages(chat.id)] == [
        ("cancelled", None),
        ("error", "The engine stopped unexpectedly."),
    ]


def test_recover_interrupted_after_close_without_finishing(db_path: Path) -> None:
    store = ChatStore(db_path)
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "Write a poem")
    reply_id = store.begin_reply(chat.id)
    store.update_reply(reply_id, "Roses are red,")
    store.close()  # the app "dies" here: finish_reply never runs

    with ChatStore(db_path) as reopened:
        assert reopened.recover_interrupted() == 1
        reply = reopened.get_message(reply_id)
        assert (reply.content, reply.status) == ("Roses are red,", "interrupted")
        assert reopened.messages(chat.id)[0].content == "Write a poem"
        assert reopened.recover_interrupted() == 0


def test_recover_interrupted_after_hard_crash(db_path: Path) -> None:
    """A process killed mid-reply (no close, no cleanup) keeps every committed update."""
    script = textwrap.dedent(
        f"""
        import os
        from engines.chat import ChatStore
        store = ChatStore({str(db_path)!r})
        chat = store.create_conversation()
        store.add_message(chat.id, "user", "Tell me a story")
        reply = store.begin_reply(chat.id)
        store.update_reply(reply, "Once upon a time")
        os._exit(9)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, timeout=60)
    assert result.returncode == 9
    with ChatStore(db_path) as store:
        assert store.recover_interrupted() == 1
        (chat,) = store.list_conversations()
        assert chat.title == "Tell me a story"
        user, reply = store.messages(chat.id)
        assert (user.content, user.status) == ("Tell me a story", "complete")
        assert (reply.content, reply.status) == ("Once upon a time", "interrupted")


def test_delete_messages_from(store: ChatStore) -> None:
    chat = store.create_conversation()
    for i in range(5):
        store.add_message(chat.id, "user" if i % 2 == 0 else "assistant", f"m{i}")
    assert store.delete_messages_from(chat.id, 3) == 2
    assert [m.content for m in store.messages(chat.id)] == ["m0", "m1", "m2"]
    assert store.delete_messages_from(chat.id, 10) == 0
    again = store.add_message(chat.id, "assistant", "regenerated")
    assert again.position == 3
    assert store.delete_messages_from(chat.id, 0) == 4
    assert store.messages(chat.id) == []


def test_edit_message(store: ChatStore) -> None:
    chat = store.create_conversation("T")
    m = store.add_message(chat.id, "user", "tpyo")
    edited = store.edit_message(m.id, "typo")
    assert edited.content == "typo" and edited.position == m.position and edited.updated_at >= m.updated_at
    assert store.messages(chat.id)[0].content == "typo"
    with pytest.raises(ChatNotFound):
        store.edit_message(777, "x")


def test_delete_conversation_cascades(store: ChatStore, db_path: Path) -> None:
    keep = store.create_conversation("keep")
    store.add_message(keep.id, "user", "stay")
    gone = store.create_conversation("gone")
    store.add_message(gone.id, "user", "a")
    store.begin_reply(gone.id)
    store.delete_conversation(gone.id)
    assert [c.id for c in store.list_conversations()] == [keep.id]
    assert store.messages(gone.id) == []
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1
    finally:
        raw.close()


def test_reopening_preserves_everything(db_path: Path) -> None:
    sampling = SamplingParams(temperature=0.1, seed=1)
    with ChatStore(db_path) as store:
        chat = store.create_conversation("Kept", model_id="m", system_prompt="sp", sampling=sampling)
        store.add_message(chat.id, "user", "q")
        rid = store.begin_reply(chat.id)
        store.finish_reply(rid, "a", "complete", stats={"seed": 1})
        before_chat = store.get_conversation(chat.id)
        before_messages = store.messages(chat.id)
    with ChatStore(db_path) as store:
        assert store.get_conversation(chat.id) == before_chat
        assert store.messages(chat.id) == before_messages
        assert store.schema_version() == SCHEMA_VERSION


def test_created_in_one_thread_used_from_others(store: ChatStore) -> None:
    chat = store.create_conversation()
    errors: list[BaseException] = []

    def worker(role: str) -> None:
        try:
            for i in range(50):
                if role == "assistant":
                    rid = store.begin_reply(chat.id)
                    store.update_reply(rid, f"partial {i}")
                    store.finish_reply(rid, f"reply {i}", "complete")
                else:
                    store.add_message(chat.id, "user", f"question {i}")
                store.list_conversations("question")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(r,)) for r in ("user", "assistant")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    messages = store.messages(chat.id)
    assert len(messages) == 100
    assert [m.position for m in messages] == list(range(100))


# ---- titles -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("# How do I *parse* JSON?", "How do I parse JSON?"),
        ("**Bold** claim about `my_var` and __init__", "Bold claim about my_var and init"),
        ("> quoted [link text](https://example.com) here", "quoted link text here"),
        ("```python\nprint('hi')\n```", "print('hi')"),
        ("- [ ] a task with ~~old~~ text", "a task with old text"),
        ("1. first step <b>bold</b>", "first step bold"),
        ("---\n\n## Heading ##", "Heading"),
        ("rename my_var in snake_case", "rename my_var in snake_case"),
        ("C# notes: 2 * 3 = 6", "C# notes: 2 * 3 = 6"),
        ("![a diagram](x.png) explained", "a diagram explained"),
    ],
)
def test_auto_titles_are_plain_words_without_markdown(text: str, title: str) -> None:
    assert auto_title_from(text) == title


def test_editing_the_first_question_retitles_the_chat_unless_the_user_named_it(store: ChatStore) -> None:
    chat = store.create_conversation()
    first = store.add_message(chat.id, "user", "# Waht is **Rust**?")
    store.add_message(chat.id, "assistant", "A language.")
    assert store.get_conversation(chat.id).title == "Waht is Rust?"
    store.edit_message(first.id, "What is *Rust*?")
    assert store.get_conversation(chat.id).title == "What is Rust?"
    later = store.add_message(chat.id, "user", "And Go?")
    store.edit_message(later.id, "And Zig?")
    assert store.get_conversation(chat.id).title == "What is Rust?"  # only the first question names the chat
    store.rename_conversation(chat.id, "Languages")
    store.edit_message(first.id, "What is Rust, really?")
    assert store.get_conversation(chat.id).title == "Languages"


# ---- reply versions (Regenerate) ---------------------------------------------------------------------------


def test_regenerate_keeps_every_version_and_history_uses_the_one_shown(store: ChatStore) -> None:
    from engines.chat.session import history_for

    chat = store.create_conversation()
    store.add_message(chat.id, "user", "Name a colour")
    reply = store.begin_reply(chat.id)
    store.finish_reply(reply, "Red.", "complete", stats={"seed": 1})
    assert store.begin_new_version(reply) == reply
    shown = store.get_message(reply)
    assert (shown.content, shown.status, shown.version, shown.versions) == ("", "streaming", 2, 2)
    store.finish_reply(reply, "Blue.", "complete", stats={"seed": 2})
    store.begin_new_version(reply)
    store.finish_reply(reply, "Green.", "cancelled")
    assert [(m.content, m.version, m.versions) for m in store.messages(chat.id)][1] == ("Green.", 3, 3)

    flipped = store.show_version(reply, 1)
    assert (flipped.content, flipped.status, flipped.stats, flipped.version, flipped.versions) == (
        "Red.", "complete", {"seed": 1}, 1, 3)
    assert [m.content for m in history_for(store, chat.id)] == ["Name a colour", "Red."]
    assert store.show_version(reply, 3).content == "Green."
    assert store.show_version(reply, 2).content == "Blue."
    with pytest.raises(ChatNotFound):
        store.show_version(reply, 4)
    assert len(store.messages(chat.id)) == 2  # versions never become extra messages


def test_a_regeneration_that_wrote_nothing_gives_the_earlier_version_back(store: ChatStore) -> None:
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "Hi")
    reply = store.begin_reply(chat.id)
    store.finish_reply(reply, "Hello!", "complete")
    store.begin_new_version(reply)
    store.drop_current_version(reply)
    back = store.get_message(reply)
    assert (back.content, back.status, back.version, back.versions) == ("Hello!", "complete", 1, 1)
    first_reply_ever = store.begin_reply(chat.id)
    store.drop_current_version(first_reply_ever)  # no earlier version: the empty reply goes
    assert [m.content for m in store.messages(chat.id)] == ["Hi", "Hello!"]


def test_deleting_a_chat_or_the_messages_after_an_edit_removes_their_versions(store: ChatStore, db_path: Path) -> None:
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "Hi")
    reply = store.begin_reply(chat.id)
    store.finish_reply(reply, "one", "complete")
    store.begin_new_version(reply)
    store.finish_reply(reply, "two", "complete")
    store.delete_messages_from(chat.id, 1)
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("SELECT COUNT(*) FROM reply_versions").fetchone()[0] == 0
    finally:
        raw.close()


def test_a_schema_1_history_is_migrated_with_its_chats_intact(db_path: Path) -> None:
    from engines.chat.records import MIGRATIONS

    db_path.parent.mkdir(parents=True)
    raw = sqlite3.connect(db_path)
    for statement in MIGRATIONS[0]:
        raw.execute(statement)
    raw.execute("INSERT INTO conversations (id, title, created_at, updated_at) VALUES (1, 'Old chat', 1, 1)")
    raw.execute("INSERT INTO messages (conversation_id, position, role, content, created_at, updated_at) "
                "VALUES (1, 0, 'user', 'hello', 1, 1), (1, 1, 'assistant', 'hi there', 1, 1)")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with ChatStore(db_path) as store:
        assert store.schema_version() == SCHEMA_VERSION >= 2
        user, reply = store.messages(1)
        assert (reply.content, reply.version, reply.versions) == ("hi there", 1, 1)
        store.begin_new_version(reply.id)
        store.finish_reply(reply.id, "hello again", "complete")
        assert store.show_version(reply.id, 1).content == "hi there"


# ---- failures become sentences -------------------------------------------------------------------------------


def test_a_full_disk_is_a_write_error_that_changes_nothing(tmp_path: Path) -> None:
    from engines.chat import ChatWriteError
    from tests.fixtures.tmpfs import fill, small_tmpfs

    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        store = ChatStore(disk / "atelier.sqlite3")
        chat = store.create_conversation()
        filler = fill(disk)
        with pytest.raises(ChatWriteError) as failed:
            for i in range(200):
                store.add_message(chat.id, "user", "x" * 20_000 + str(i))
        assert str(failed.value) == (f"The disk holding your chats is full ({disk}), so the chat could not be saved. "
                                     "Free some space; Atelier saves again as soon as it can.")
        written = len(store.messages(chat.id))
        filler.unlink()
        store.add_message(chat.id, "user", "after the space came back")
        assert [m.content for m in store.messages(chat.id)][written:] == ["after the space came back"]
        store.close()


def test_a_file_made_read_only_while_open_refuses_writes_with_a_sentence(db_path: Path) -> None:
    from engines.chat import ChatWriteError
    from tests.fixtures.tmpfs import read_only

    if os.geteuid() != 0:
        pytest.skip("an open file is made unwritable with chattr +i, which needs root (chmod leaves open files writable)")
    store = ChatStore(db_path)
    chat = store.create_conversation()
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    companions = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    with read_only(*companions):
        with pytest.raises(ChatWriteError) as failed:
            store.add_message(chat.id, "user", "hello")
        assert str(failed.value) == (f"The chat history ({db_path}) is read-only, so nothing new can be saved. "
                                     "Check the file's permissions.")
        assert store.list_conversations()[0].id == chat.id  # reading still works
    store.close()
