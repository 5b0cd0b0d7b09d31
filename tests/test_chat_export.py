"""Markdown and JSON exports of a stored conversation."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from engines.api import SamplingParams
from engines.chat import (
    EXPORT_FORMAT,
    ChatStore,
    export_json,
    export_markdown,
    suggested_filename,
    write_export,
)
from engines.chat.citations import save_sources, sources_in
from engines.doc_index.types import PassageHit
from engines.documents import Grounding

CODE_REPLY = (
    "Here you go:\n\n"
    "```python\n"
    "def add(a, b):\n"
    "    return a + b  # *not* markdown **bold**\n"
    "```\n\n"
    "Done."
)


@pytest.fixture
def chat(tmp_path: Path):
    with ChatStore(tmp_path / "chat.sqlite3") as store:
        conv = store.create_conversation(
            "Python help", model_id="gemma-3-270m", system_prompt="You are helpful.\nBe brief.",
            sampling=SamplingParams(temperature=0.4, seed=11),
        )
        store.add_message(conv.id, "user", "Write add()")
        rid = store.begin_reply(conv.id)
        store.finish_reply(rid, CODE_REPLY, "complete", stats={"completion_tokens": 30, "seed": 11})
        store.add_message(conv.id, "user", "And subtract?")
        rid = store.begin_reply(conv.id)
        store.update_reply(rid, "Sure:\n\n```python\ndef sub(a, b):")
        store.close()
        with ChatStore(tmp_path / "chat.sqlite3") as reopened:  # crash, then restart
            reopened.recover_interrupted()
            yield reopened.get_conversation(conv.id), reopened.messages(conv.id)


def test_markdown_layout(chat) -> None:
    conversation, messages = chat
    md = export_markdown(conversation, messages)
    assert md.startswith("# Python help\n")
    assert "gemma-3-270m" in md
    assert "> **System prompt**" in md
    assert "> You are helpful.\n> Be brief." in md
    assert md.count("**You**") == 2 and md.count("**Assistant**") == 2
    assert md.index("Write add()") < md.index("def add") < md.index("And subtract?")
    assert CODE_REPLY in md  # code kept verbatim
    assert "interrupted" in md.lower()
    assert md.endswith("\n")


def test_markdown_closes_fence_left_open_by_interrupted_reply(chat) -> None:
    conversation, messages = chat
    md = export_markdown(conversation, messages)
    tail = md[md.index("def sub(a, b):"):]
    assert tail.startswith("def sub(a, b):\n```")
    assert md.count("```") % 2 == 0
    note_at = md.lower().index("interrupted")
    assert note_at > md.index("def sub(a, b):\n```")


def test_markdown_without_system_prompt_and_notes(tmp_path: Path) -> None:
    with ChatStore(tmp_path / "c.sqlite3") as store:
        conv = store.create_conversation("Plain")
        store.add_message(conv.id, "user", "hi")
        rid = store.begin_reply(conv.id)
        store.finish_reply(rid, "Stopped he", "cancelled", notice="2 older turns were left out.")
        md = export_markdown(store.get_conversation(conv.id), store.messages(conv.id))
    assert "System prompt" not in md and ">" not in md.replace("->", "")
    assert "stopped before it finished" in md
    assert "*2 older turns were left out.*" in md


def test_json_structure_round_trips(chat) -> None:
    conversation, messages = chat
    data = json.loads(export_json(conversation, messages))
    assert data["format"] == EXPORT_FORMAT == "atelier-chat"
    assert data["version"] == 1
    assert data["title"] == "Python help"
    assert datetime.fromisoformat(data["created_at"]).timestamp() == pytest.approx(conversation.created_at)
    assert data["model_id"] == "gemma-3-270m"
    assert data["system_prompt"] == "You are helpful.\nBe brief."
    assert data["sampling"]["temperature"] == 0.4 and data["sampling"]["seed"] == 11
    assert SamplingParams(**data["sampling"]) == conversation.sampling
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert data["messages"][1]["content"] == CODE_REPLY
    assert data["messages"][1]["stats"] == {"completion_tokens": 30, "seed": 11}
    assert data["messages"][3]["status"] == "interrupted"
    assert data["messages"][0]["stats"] is None
    for m in data["messages"]:
        assert set(m) == {"role", "content", "status", "created_at", "stats"}
        datetime.fromisoformat(m["created_at"])


def test_json_uses_default_sampling_when_unset(tmp_path: Path) -> None:
    with ChatStore(tmp_path / "c.sqlite3") as store:
        conv = store.create_conversation("Ünïcode ✓")
        text = export_json(conv, [])
    data = json.loads(text)
    assert SamplingParams(**data["sampling"]) == SamplingParams()
    assert data["messages"] == [] and data["model_id"] is None
    assert "Ünïcode ✓" in text  # written as UTF-8, not \\u escapes


def test_write_export_is_atomic_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "out" / "chat.md"
    assert write_export(target, "first\n") == target
    write_export(target, "second ✓\r\nline\n")
    assert target.read_bytes() == "second ✓\r\nline\n".encode("utf-8")
    assert [p.name for p in target.parent.iterdir()] == ["chat.md"]  # no temp files left


def test_write_export_failure_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "chat.json"
    write_export(target, "old")
    with pytest.raises(UnicodeEncodeError):
        write_export(target, "half \ud800 of a surrogate pair")
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["chat.json"]


def test_suggested_filename(chat) -> None:
    conversation, _ = chat
    assert suggested_filename(conversation, "md") == "Python help.md"
    bad = type(conversation)(**{**conversation.__dict__, "title": 'a/b:c*?"<>|. '})
    name = suggested_filename(bad, ".json")
    assert name.endswith(".json") and not any(ch in name for ch in '/:*?"<>|')


# ---- a grounded reply's sources ----------------------------------------------------------------------------------


def _hit(path: str, page: int | None, text: str, score: float, similarity: float) -> PassageHit:
    return PassageHit(passage_id=1, path=path, page=page, start=4, end=4 + len(text), text=text, score=score,
                      similarity=similarity)


@pytest.fixture
def grounded_chat(tmp_path: Path):
    """Three replies: grounded in two passages, not grounded at all, and grounded with nothing relevant found."""
    home = tmp_path / "home" / "ann"
    with ChatStore(tmp_path / "chat.sqlite3") as store:
        conv = store.create_conversation("Tax deadline")
        store.add_message(conv.id, "user", "When is the deadline?")
        grounded = store.begin_reply(conv.id)
        save_sources(store, grounded, 1, "Tax *papers*", Grounding("system", (
            _hit(str(home / "Documents" / "forms_2025.pdf"), 2, "The deadline is 31 May.", 0.016393, 0.6149),
            _hit(str(home / "Documents" / "office.txt"), None, "Forms go to the office.", 0.0161, 0.4)), "excerpts"))
        store.finish_reply(grounded, "31 May [1].", "complete", {"completion_tokens": 5})
        store.add_message(conv.id, "user", "Thanks!")
        plain = store.begin_reply(conv.id)
        store.finish_reply(plain, "You're welcome.", "complete")
        store.add_message(conv.id, "user", "And the garden?")
        nothing = store.begin_reply(conv.id)
        save_sources(store, nothing, 1, "Tax *papers*", Grounding(
            "system", (), "nothing", "Nothing relevant was found in 'Tax *papers*': the closest has a similarity of "
                                     "0.12."))
        store.finish_reply(nothing, "I do not know.", "complete")
        yield store.get_conversation(conv.id), store.messages(conv.id), sources_in(store, conv.id), home


def test_markdown_lists_a_grounded_replys_sources_under_it_by_file_name(grounded_chat) -> None:
    conversation, messages, sources, home = grounded_chat
    md = export_markdown(conversation, messages, None, None, sources)
    sources_block = ("31 May [1].\n\n"
                     "*Sources from 'Tax \\*papers\\*':*\n\n"
                     "- [1] forms\\_2025.pdf, page 2 · score 0.0164 · similarity 0.61\n"
                     "- [2] office.txt · score 0.0161 · similarity 0.40\n\n"
                     "**You**\n\nThanks!\n\n")
    nothing_block = ("I do not know.\n\n"
                     "*Nothing relevant was found in 'Tax \\*papers\\*': the closest has a similarity of 0.12.*\n")
    assert sources_block in md
    assert md.endswith(nothing_block)
    assert str(home) not in md and "Documents" not in md  # the file's name only, never the folders of the home
    assert "The deadline is 31 May." not in md  # passages are not inlined
    # Everything else is exactly what an export without sources writes.
    assert md.replace(sources_block, "31 May [1].\n\n**You**\n\nThanks!\n\n").replace(
        nothing_block, "I do not know.\n") == export_markdown(conversation, messages)


def test_json_keeps_every_stored_field_of_a_grounded_replys_sources(grounded_chat) -> None:
    conversation, messages, sources, home = grounded_chat
    data = json.loads(export_json(conversation, messages, None, None, sources))
    grounded, plain, nothing = data["messages"][1], data["messages"][3], data["messages"][5]
    assert grounded["sources_from"] == {"collection": "Tax *papers*", "mode": "excerpts", "notice": None}
    assert grounded["sources"] == [
        {"number": 1, "path": str(home / "Documents" / "forms_2025.pdf"), "page": 2, "start": 4, "end": 27,
         "score": 0.016393, "similarity": 0.6149, "text": "The deadline is 31 May."},
        {"number": 2, "path": str(home / "Documents" / "office.txt"), "page": None, "start": 4, "end": 27,
         "score": 0.0161, "similarity": 0.4, "text": "Forms go to the office."}]
    assert nothing["sources_from"] == {
        "collection": "Tax *papers*", "mode": "nothing",
        "notice": "Nothing relevant was found in 'Tax *papers*': the closest has a similarity of 0.12."}
    assert nothing["sources"] == []
    assert set(plain) == {"role", "content", "status", "created_at", "stats"}  # not grounded: exactly as before
    before = json.loads(export_json(conversation, messages))
    for message in data["messages"]:
        message.pop("sources", None)
        message.pop("sources_from", None)
    assert data == before
