"""Images attached to chat messages in the history (schema 4): saved with the message, sent again, deleted with it."""

import sqlite3
from pathlib import Path

from engines.chat import ChatStore
from engines.chat.records import MIGRATIONS
from engines.chat.session import history_for
from tests.fixtures.bad_images import real_png


def test_images_are_saved_with_their_message_in_order_and_sent_again(tmp_path: Path) -> None:
    first, second = real_png(40, 30, (255, 0, 0)), real_png(20, 10, (0, 0, 255))
    with ChatStore(tmp_path / "chats.sqlite3") as store:
        chat = store.create_conversation()
        asked = store.add_message(chat.id, "user", "", images=(first, second))  # an image alone is a message
        store.add_message(chat.id, "assistant", "two squares")
        store.add_message(chat.id, "user", "which is red?")
        assert store.images_of(chat.id) == {asked.id: (first, second)}
        history = history_for(store, chat.id)
        assert [(m.role, m.content, m.images) for m in history] == [
            ("user", "", (first, second)), ("assistant", "two squares", ()), ("user", "which is red?", ())]
        store.delete_conversation(chat.id)
        assert store._db.execute("SELECT COUNT(*) FROM message_images").fetchone()[0] == 0  # gone with the chat


def test_a_schema_3_history_gains_images_and_keeps_its_chats(tmp_path: Path) -> None:
    path = tmp_path / "chats.sqlite3"
    raw = sqlite3.connect(path)
    for migration in MIGRATIONS[:3]:
        for statement in migration:
            raw.execute(statement)
    raw.execute("INSERT INTO conversations (id, title, created_at, updated_at) VALUES (1, 'Old chat', 1, 1)")
    raw.execute("INSERT INTO messages (conversation_id, position, role, content, created_at, updated_at) "
                "VALUES (1, 0, 'user', 'hello', 1, 1)")
    raw.execute("PRAGMA user_version = 3")
    raw.commit()
    raw.close()
    with ChatStore(path) as store:
        assert store.schema_version() == len(MIGRATIONS)  # migrated to the newest, images table included
        assert [m.content for m in store.messages(1)] == ["hello"] and store.images_of(1) == {}
        store.add_message(1, "user", "look", images=(real_png(),))
        assert list(store.images_of(1).values()) == [(real_png(),)]


def test_an_exported_chat_keeps_its_images(tmp_path: Path) -> None:
    import base64
    import json

    from engines.chat.export import export_json, export_markdown

    png = real_png(8, 6)
    with ChatStore(tmp_path / "chats.sqlite3") as store:
        chat = store.create_conversation()
        asked = store.add_message(chat.id, "user", "what is this?", images=(png,))
        store.add_message(chat.id, "assistant", "a square")
        conversation, messages, images = store.get_conversation(chat.id), store.messages(chat.id), store.images_of(chat.id)
        data = json.loads(export_json(conversation, messages, images))
        assert data["messages"][0]["images"] == [{"media_type": "image/png", "data": base64.b64encode(png).decode()}]
        assert "images" not in data["messages"][1]
        markdown = export_markdown(conversation, messages, images)
        assert f"**You**\n\n![image 1](data:image/png;base64,{base64.b64encode(png).decode()})\n\nwhat is this?" in markdown
        assert asked.id in images


def test_recovered_chats_keep_their_images_on_their_own_messages(tmp_path: Path) -> None:
    from engines.chat.salvage import salvage

    old_path, photo = tmp_path / "old.sqlite3", real_png(12, 9, (0, 200, 0))
    with ChatStore(old_path) as old:
        for i in range(3):  # message ids in the old file that the live one will hand to other messages
            chat = old.create_conversation(f"chat {i}")
            old.add_message(chat.id, "user", f"question {i}")
        pictured = old.create_conversation("with a picture")
        old.add_message(pictured.id, "user", "what is this?", images=(photo,))
    live = ChatStore(tmp_path / "live.sqlite3")
    mine = live.create_conversation("mine")
    for i in range(4):
        live.add_message(mine.id, "user", f"live {i}")
    report = salvage(old_path, live)
    assert (report.conversations, report.other_rows) == (4, 0)  # images come with their message, not as rows
    recovered = next(c for c in live.list_conversations() if c.title == "with a picture")
    (asked,) = live.messages(recovered.id)
    assert live.images_of(recovered.id) == {asked.id: (photo,)}
    assert live.images_of(mine.id) == {}  # never on a live message that happens to have the old id
    live.close()
