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
