"""Documents in the chat history (schema 5): a chat's collection and a grounded reply's sources, kept, read back."""

import sqlite3

from engines.chat import SCHEMA_VERSION, ChatStore
from engines.chat.citations import chat_collection, save_sources, set_chat_collection, sources_in
from engines.doc_index.types import PassageHit
from engines.documents import Grounding


def hit(path, page, text, score=0.03, similarity=0.61):
    return PassageHit(passage_id=1, path=path, page=page, start=0, end=len(text), text=text, score=score,
                      similarity=similarity)


def test_a_collection_stays_attached_and_a_replys_sources_come_back_per_version(tmp_path):
    db = tmp_path / "chats.sqlite3"
    with ChatStore(db) as store:
        chat = store.create_conversation()
        assert chat_collection(store, chat.id) is None
        set_chat_collection(store, chat.id, "Taxes")
        store.add_message(chat.id, "user", "When is the deadline?")
        reply = store.begin_reply(chat.id)
        grounding = Grounding("system", (hit("/docs/a.pdf", 2, "The deadline is 31 May."),
                                         hit("/docs/b.txt", None, "Forms go to the office.", 0.02, 0.4)), "excerpts")
        save_sources(store, reply, 1, "Taxes", grounding)
        store.finish_reply(reply, "31 May [1].", "complete", None, None)
    with ChatStore(db) as store:  # reopened: both are still there
        assert chat_collection(store, chat.id) == "Taxes"
        sources = sources_in(store, chat.id)[reply]
        assert (sources.collection, sources.mode, sources.notice) == ("Taxes", "excerpts", None)
        assert [(c.number, c.path, c.page, c.text) for c in sources.citations] == [
            (1, "/docs/a.pdf", 2, "The deadline is 31 May."), (2, "/docs/b.txt", None, "Forms go to the office.")]
        second = store.begin_new_version(reply)  # Regenerate: the new version has no sources until it is grounded
        store.finish_reply(second, "Another answer.", "complete", None, None)
        assert sources_in(store, chat.id) == {}
        store.show_version(reply, 1)
        assert sources_in(store, chat.id)[reply].citations[0].similarity == 0.61
        set_chat_collection(store, chat.id, None)
        assert chat_collection(store, chat.id) is None
        store.delete_conversation(chat.id)  # cascades
        assert store._read("SELECT COUNT(*) FROM reply_citations", one=True)[0] == 0  # noqa: SLF001


def test_nothing_relevant_is_kept_as_its_notice(tmp_path):
    with ChatStore(tmp_path / "chats.sqlite3") as store:
        chat = store.create_conversation()
        store.add_message(chat.id, "user", "?")
        reply = store.begin_reply(chat.id)
        save_sources(store, reply, 1, "Taxes", Grounding("x", (), "nothing", "Nothing relevant was found in 'Taxes'."))
        sources = sources_in(store, chat.id)[reply]
        assert (sources.mode, sources.notice, sources.citations) == ("nothing", "Nothing relevant was found in "
                                                                                "'Taxes'.", ())


def test_a_schema_4_history_is_migrated_and_keeps_its_chats(tmp_path):
    db = tmp_path / "chats.sqlite3"
    with ChatStore(db) as store:
        chat = store.create_conversation()
        store.add_message(chat.id, "user", "kept")
    raw = sqlite3.connect(db)
    raw.execute("DROP TABLE reply_citations")
    raw.execute("DROP TABLE conversation_documents")
    raw.execute("PRAGMA user_version = 4")
    raw.commit()
    raw.close()
    with ChatStore(db) as store:
        assert store.schema_version() == SCHEMA_VERSION == 5
        assert [m.content for m in store.messages(chat.id)] == ["kept"]
        set_chat_collection(store, chat.id, "Notes")
        assert chat_collection(store, chat.id) == "Notes"


def test_an_empty_collection_says_how_to_fill_it_in_either_front_end():
    from engines.doc_index.types import SearchResult
    from engines.documents import nothing_relevant

    assert nothing_relevant("Taxes", SearchResult((), 0, None, 0.3, "minilm")) == (
        "The collection 'Taxes' has no indexed passages yet: add files to it on the Documents page or with "
        "'atelier docs add', and index it.")
