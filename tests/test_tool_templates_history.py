"""Tool calls kept with the chat: in the Markdown and JSON exports, after a crash, and in a recovered history file."""

from __future__ import annotations

import json
from pathlib import Path

from engines.api import ChatMessage, ToolCallRequest
from engines.chat import ChatStore
from engines.chat.export import calls_for_export, export_json, export_markdown
from engines.chat.session import history_for
from engines.chat.tool_log import calls_in, chat_tools, save_call, set_chat_tools
from engines.tools.loop import ToolCall


def reply_with_a_call(store: ChatStore, title: str = "Time", finish: bool = True) -> tuple[int, int]:
    """A chat whose reply called get_current_time once; (chat id, reply id)."""
    chat = store.create_conversation(title)
    store.add_message(chat.id, "user", "What time is it?")
    reply = store.begin_reply(chat.id)
    call = ToolCall("call_0123456789ab", 1, 1, "get_current_time", "time", {"timezone": "UTC"},
                    text="Let me look.", status="done", result='{"datetime": "12:00 ```x```"}')
    save_call(store, reply, store.get_message(reply).version, call)
    if finish:
        store.finish_reply(reply, "It is noon.", "complete", None, None)
    else:
        store.update_reply(reply, "It is")
    set_chat_tools(store, chat.id, ["time"], None)
    return chat.id, reply


def test_exports_carry_each_call_with_its_arguments_and_result(tmp_path: Path):
    with ChatStore(tmp_path / "chat.sqlite3") as store:
        chat_id, reply = reply_with_a_call(store)
        conversation, messages = store.get_conversation(chat_id), store.messages(chat_id)
        calls = calls_for_export(store, chat_id)
        markdown = export_markdown(conversation, messages, None, calls)
        data = json.loads(export_json(conversation, messages, None, calls))
    assert ("**Assistant**\n\nLet me look.\n\n*Tool call 1: `get_current_time` on time (done)*\n\n"
            '```json\n{\n  "timezone": "UTC"\n}\n```\n\nResult:\n\n'
            '````\n{"datetime": "12:00 ```x```"}\n````\n\nIt is noon.\n') in markdown
    assert data["messages"][1]["tool_calls"] == [{
        "id": "call_0123456789ab", "round": 1, "server": "time", "tool": "get_current_time",
        "arguments": {"timezone": "UTC"}, "status": "done", "result": '{"datetime": "12:00 ```x```"}',
        "text": "Let me look."}]
    assert "tool_calls" not in data["messages"][0] and data["version"] == 1


def test_a_reply_interrupted_by_a_crash_keeps_its_calls_with_their_ids(tmp_path: Path):
    path = tmp_path / "chat.sqlite3"
    with ChatStore(path) as store:
        chat_id, reply = reply_with_a_call(store, finish=False)
    with ChatStore(path) as reopened:  # the app died mid-reply, then started again
        reopened.recover_interrupted()
        assert reopened.get_message(reply).status == "interrupted"
        history = history_for(reopened, chat_id)
    assert history[1:3] == (
        ChatMessage("assistant", "Let me look.",
                    tool_calls=(ToolCallRequest("call_0123456789ab", "get_current_time", {"timezone": "UTC"}),)),
        ChatMessage("tool", '{"datetime": "12:00 ```x```"}', tool_call_id="call_0123456789ab", name="get_current_time"))


def test_a_recovered_history_brings_calls_and_tool_choices_to_the_new_ids(tmp_path: Path):
    from engines.chat.salvage import salvage

    old_path = tmp_path / "old.sqlite3"
    with ChatStore(old_path) as old:
        for i in range(3):  # ids in the old file that the live one hands to other messages and chats
            other = old.create_conversation(f"chat {i}")
            old.add_message(other.id, "user", f"question {i}")
        reply_with_a_call(old, "With a call")
    live = ChatStore(tmp_path / "live.sqlite3")
    mine = live.create_conversation("mine")
    for i in range(6):
        live.add_message(mine.id, "user", f"live {i}")
    report = salvage(old_path, live)
    assert (report.conversations, report.other_rows) == (4, 0)  # calls come with their messages, not as rows
    recovered = next(c for c in live.list_conversations() if c.title == "With a call")
    [(message_id, [call])] = calls_in(live, recovered.id).items()
    assert message_id == live.messages(recovered.id)[1].id
    assert (call.call_id, call.tool, call.arguments_json, call.status, call.text) == (
        "call_0123456789ab", "get_current_time", '{"timezone":"UTC"}', "done", "Let me look.")
    assert chat_tools(live, recovered.id) == (["time"], None)
    assert calls_in(live, mine.id) == {} and chat_tools(live, mine.id) == ([], None)
    live.close()
