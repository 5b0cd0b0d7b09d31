"""Tool calls in a chat turn: saved as they happen, kept per reply version, re-sent in later turns.

The store is the real ChatStore; the model is FakeHost writing scripted
steps (what the grammar fallback lets a model write), and the tool is
mcp-server-time's real convert_time where a server is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engines.api import ChatMessage, TextLoadSpec, ToolCallRequest
from engines.chat import ChatStore
from engines.chat.session import ChatTurn, history_for
from engines.chat.tool_log import calls_of, chat_tools, set_chat_tools
from engines.tools.connection import ToolOutcome
from engines.tools.loop import Approvals, ToolCallEvent
from engines.tools.servers import ListedTool, ToolServer
from engines.tools.toolset import ToolSet
from tests.fixtures.fake_host import FakeHost
from tests.fixtures.mcp_servers import time_server_command

SPEC = TextLoadSpec("/models/fake.gguf", 2048)
ADD = ListedTool("add", "Adds two integers", {"type": "object", "properties": {"a": {"type": "integer"},
                 "b": {"type": "integer"}}, "required": ["a", "b"]})


class StepsHost(FakeHost):
    """FakeHost writing one scripted step per request."""

    def __init__(self, *steps: str) -> None:
        super().__init__(delay=0)
        self.steps = list(steps)

    def generate(self, request):
        self.reply = self.steps.pop(0)
        return super().generate(request)


def adder() -> ToolSet:
    tools = ToolSet()
    tools.add_builtin(ADD, lambda args, progress: ToolOutcome(str(args["a"] + args["b"])), server="maths")
    return tools


def call_step(name: str, arguments: dict) -> str:
    return json.dumps({"tool_calls": [{"name": name, "arguments": arguments}]})


@pytest.fixture
def store(tmp_path: Path):
    with ChatStore(tmp_path / "atelier.sqlite3") as s:
        yield s


def test_calls_are_saved_as_they_change_and_the_next_turn_sends_them(store):
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "What is 2 + 3?")
    host = StepsHost(call_step("add", {"a": 2, "b": 3}), '{"reply": "It is 5."}')
    seen = []
    outcome = ChatTurn(store, host, chat.id, SPEC, tools=adder(), approvals=Approvals(allow_all=True)).run(seen.append)
    assert (outcome.text, outcome.error) == ("It is 5.", None)
    assert [e.call.status for e in seen if isinstance(e, ToolCallEvent)] == ["pending", "running", "done"]
    reply = store.get_message(outcome.reply_id)
    assert (reply.content, reply.status) == ("It is 5.", "complete")
    [saved] = calls_of(store, reply.id, reply.version)
    assert (saved.round, saved.seq, saved.server, saved.tool, saved.arguments_json, saved.status, saved.result) == (
        1, 1, "maths", "add", '{"a":2,"b":3}', "done", "5")

    store.add_message(chat.id, "user", "And times 2?")
    history = history_for(store, chat.id)
    assert history == (
        ChatMessage("user", "What is 2 + 3?"),
        ChatMessage("assistant", "", tool_calls=(ToolCallRequest(saved.call_id, "add", {"a": 2, "b": 3}),)),
        ChatMessage("tool", "5", tool_call_id=saved.call_id, name="add"),
        ChatMessage("assistant", "It is 5."),
        ChatMessage("user", "And times 2?"),
    )
    # The next reply sends them in the fallback's plain form (this template has no tool role).
    host.steps = ['{"reply": "10."}']
    ChatTurn(store, host, chat.id, SPEC, tools=adder(), approvals=Approvals(allow_all=True)).run(lambda e: None)
    sent = [(m.role, m.content) for m in host.requests[-1].messages]
    assert sent[0][0] == "system" and sent[1] == ("user", "What is 2 + 3?")
    assert sent[2:6] == [("assistant", call_step("add", {"a": 2, "b": 3})), ("user", "Result of add: 5"),
                         ("assistant", "It is 5."), ("user", "And times 2?")]


def test_a_refused_call_is_saved_refused_and_regenerate_keeps_calls_per_version(store):
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "What is 1 + 1?")
    host = StepsHost(call_step("add", {"a": 1, "b": 1}), '{"reply": "I may not."}')
    first = ChatTurn(store, host, chat.id, SPEC, tools=adder(), approvals=Approvals()).run(lambda e: None)
    [refused] = calls_of(store, first.reply_id, 1)
    assert (refused.status, refused.result) == ("refused", "The user did not allow this call.")

    host.steps = [call_step("add", {"a": 1, "b": 1}), '{"reply": "2."}']
    second = ChatTurn(store, host, chat.id, SPEC, regenerate_id=first.reply_id, tools=adder(),
                      approvals=Approvals(lambda call: "once")).run(lambda e: None)
    assert second.text == "2."
    assert [c.status for c in calls_of(store, first.reply_id, 2)] == ["done"]
    assert [c.status for c in calls_of(store, first.reply_id, 1)] == ["refused"]  # version 1 keeps its own
    assert [m.content for m in history_for(store, chat.id) if m.role == "tool"] == ["2"]
    store.show_version(first.reply_id, 1)
    assert [m.content for m in history_for(store, chat.id) if m.role == "tool"] == [
        "The user did not allow this call."]


def test_a_chat_remembers_its_tool_servers_and_reply_schema_and_a_turn_sends_the_schema(store):
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "Name a colour as JSON.")
    host = StepsHost('{"colour": "red"}')
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}}, "required": ["colour"]}
    outcome = ChatTurn(store, host, chat.id, SPEC, json_schema=schema).run(lambda e: None)
    assert (outcome.text, host.requests[0].json_schema) == ('{"colour": "red"}', schema)
    assert chat_tools(store, chat.id) == ([], None)
    set_chat_tools(store, chat.id, ["time", "everything"], {"type": "object"})
    assert chat_tools(store, chat.id) == (["time", "everything"], {"type": "object"})
    set_chat_tools(store, chat.id, [], None)
    assert chat_tools(store, chat.id) == ([], None)


@pytest.mark.slow
def test_a_real_server_call_is_kept_with_its_result(store):
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "Noon UTC in Tokyo?")
    host = StepsHost(call_step("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                "target_timezone": "Asia/Tokyo"}), '{"reply": "21:00."}')
    with ToolSet.open([ToolServer("time", command=tuple(time_server_command()), timeout_s=30)]) as tools:
        outcome = ChatTurn(store, host, chat.id, SPEC, tools=tools, approvals=Approvals(allow_all=True)).run(
            lambda e: None)
    [saved] = calls_of(store, outcome.reply_id, 1)
    assert (saved.server, saved.status) == ("time", "done")
    assert json.loads(saved.result)["time_difference"] == "+9.0h"
    assert outcome.text == "21:00."
