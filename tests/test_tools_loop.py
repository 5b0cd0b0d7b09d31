"""The tool loop (engines.tools.loop) with the grammar fallback.

The first tests script the model's steps (what it writes is given), so each
rule of the loop is checked exactly: validation before anything runs,
approval once/always/refused, a failing server, the bound on calls, the
reply streamed without its JSON. The real tools there are mcp-server-time's.
The last ones run the real Gemma model under the real grammar.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from engines.api import ChatMessage, FinishedEvent, NoticeEvent, SamplingParams, TextLoadSpec, TextRequest, TokenEvent
from engines.tools import fallback
from engines.tools.connection import ToolOutcome, ToolServerError
from engines.tools.loop import Approvals, ToolCallEvent, ToolProgressEvent, run_tool_turn
from engines.tools.servers import ListedTool, ToolServer
from engines.tools.toolset import ToolSet
from tests.fixtures.mcp_servers import time_server_command
from tests.fixtures.scripted_model import ASK, ScriptedModel, calls_step

ADD = ListedTool("add", "Adds two integers", {"type": "object", "properties": {"a": {"type": "integer"},
                 "b": {"type": "integer", "minimum": 0}}, "required": ["a", "b"]})


def adder() -> ToolSet:
    tools = ToolSet()
    tools.add_builtin(ADD, lambda args, progress: ToolOutcome(str(args["a"] + args["b"])), server="maths")
    return tools


def run(model, tools, approvals=None, **options):
    events = []
    outcome = run_tool_turn(model, ASK, tools, approvals or Approvals(allow_all=True), events.append, **options)
    return outcome, events


def statuses(events):
    return [(e.call.name, e.call.status) for e in events if isinstance(e, ToolCallEvent)]


def test_a_call_runs_its_result_goes_back_and_the_reply_streams_without_its_json():
    model = ScriptedModel(calls_step(("add", {"a": 2, "b": 3})), '{"reply": "It is \\"5\\".\\nDone"}')
    outcome, events = run(model, adder())
    assert outcome.text == 'It is "5".\nDone'
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == 'It is "5".\nDone'
    assert statuses(events) == [("add", "pending"), ("add", "running"), ("add", "done")]
    [call] = outcome.calls
    assert (call.server, call.arguments, call.status, call.result) == ("maths", {"a": 2, "b": 3}, "done", "5")
    # The first step offered the tools in the system message, under a grammar of calls or a reply.
    first = model.requests[0]
    assert first.messages[0].content.startswith("Be brief.\n\nYou can call tools.")
    assert "- add: Adds two integers; arguments: " in first.messages[0].content
    assert first.json_schema == fallback.step_schema(adder().definitions(), "auto")
    assert first.json_schema["anyOf"][0]["properties"]["tool_calls"]["maxItems"] == 4
    # The second saw the call and its result as plain turns (Gemma's template has no tool role).
    second = model.requests[1].messages
    assert second[-2:] == (ChatMessage("assistant", calls_step(("add", {"a": 2, "b": 3}))),
                           ChatMessage("user", "Result of add: 5"))
    assert [m.role for m in outcome.messages] == ["assistant", "tool"]
    assert outcome.messages[1] == ChatMessage("tool", "5", tool_call_id=call.call_id, name="add")


def test_invalid_arguments_and_unknown_tools_go_back_to_the_model_and_nothing_runs():
    ran = []
    tools = ToolSet()
    tools.add_builtin(ADD, lambda args, progress: ran.append(args) or ToolOutcome("?"), server="maths")
    model = ScriptedModel(calls_step(("add", {"a": "two", "b": -1}), ("weather", {"city": "Oslo"})),
                          '{"reply": "Sorry."}')
    outcome, events = run(model, tools)
    assert ran == []
    assert [(c.status, c.result) for c in outcome.calls] == [
        ("invalid", "Error: the arguments do not match the schema of 'add': a: 'two' is not of type 'integer'; "
                    "b: -1 is less than the minimum of 0."),
        ("invalid", "Error: there is no tool 'weather'. The tools are: add."),
    ]
    assert model.requests[1].messages[-1].content == (
        f"Result of add: {outcome.calls[0].result}\nResult of weather: {outcome.calls[1].result}")


def test_approval_refused_once_and_always():
    asked = []
    answers = iter(["refuse", "once", "always"])
    approvals = Approvals(lambda call: asked.append(call.arguments) or next(answers))
    steps = [calls_step(("add", {"a": n, "b": 1})) for n in (1, 2, 3, 4)]
    model = ScriptedModel(*steps, '{"reply": "ok"}')
    outcome, events = run(model, adder(), approvals)
    assert asked == [{"a": 1, "b": 1}, {"a": 2, "b": 1}, {"a": 3, "b": 1}]  # the fourth: "always", not asked
    assert [(c.status, c.result) for c in outcome.calls] == [
        ("refused", "The user did not allow this call."), ("done", "3"), ("done", "4"), ("done", "5")]
    assert approvals.always == {"add"}
    # Without a way to ask (a non-interactive run) every call is refused, with the caller's words.
    outcome, _ = run(ScriptedModel(steps[0], '{"reply": "ok"}'), adder(), Approvals(refusal="Pass --allow-tools."))
    assert [(c.status, c.result) for c in outcome.calls] == [("refused", "Pass --allow-tools.")]


def test_a_failing_server_is_one_line_and_the_conversation_goes_on():
    def broken(args, progress):
        raise ToolServerError("maths", "The tool server 'maths' stopped while asked to run 'add'.")

    tools = ToolSet()
    tools.add_builtin(ADD, broken, server="maths")
    outcome, events = run(ScriptedModel(calls_step(("add", {"a": 1, "b": 2})), '{"reply": "It failed."}'), tools)
    assert outcome.text == "It failed."
    assert [e.message for e in events if isinstance(e, NoticeEvent)] == [
        "The tool server 'maths' stopped while asked to run 'add'."]
    assert outcome.calls[0].result == "Error: The tool server 'maths' stopped while asked to run 'add'."


def test_a_repeated_call_gets_the_earlier_result_without_running_and_then_the_model_must_answer():
    ran = []
    tools = ToolSet()
    tools.add_builtin(ADD, lambda args, progress: ran.append(args) or ToolOutcome("2"), server="maths")
    step = calls_step(("add", {"a": 1, "b": 1}))
    model = ScriptedModel(step, step, '{"reply": "2."}')
    outcome, events = run(model, tools)
    assert ran == [{"a": 1, "b": 1}]
    assert [(c.status, c.result) for c in outcome.calls] == [("done", "2"), ("done", "2")]
    assert model.requests[1].json_schema == fallback.step_schema(tools.definitions(), "auto")
    assert model.requests[2].json_schema == fallback.step_schema((), "none")
    assert outcome.text == "2."


def test_the_loop_stops_at_its_bound_and_then_asks_for_an_answer_with_tools_off():
    step1 = calls_step(("add", {"a": 1, "b": 1}), ("add", {"a": 2, "b": 2}))
    step2 = calls_step(("add", {"a": 3, "b": 3}), ("add", {"a": 4, "b": 4}))
    model = ScriptedModel(step1, step2, '{"reply": "Enough."}')
    outcome, _ = run(model, adder(), max_calls=3)
    assert [c.status for c in outcome.calls] == ["done", "done", "done", "refused"]
    assert outcome.calls[3].result == "Not run: at most 3 tool calls are made in one reply."
    assert model.requests[2].json_schema == fallback.step_schema((), "none")
    assert "You can call tools" not in model.requests[2].messages[0].content
    assert model.requests[1].json_schema["anyOf"][0]["properties"]["tool_calls"]["maxItems"] == 1
    assert outcome.text == "Enough."


def test_a_reply_cut_by_the_token_limit_is_kept_and_a_cut_call_is_said():
    outcome, events = run(ScriptedModel('{"reply": "The answer is fi'), adder())
    assert outcome.text == "The answer is fi"
    outcome, events = run(ScriptedModel('{"tool_calls": [{"name": "add", "argu'), adder())
    assert outcome.text == ""
    assert [e.message for e in events if isinstance(e, NoticeEvent)] == [
        "The model's answer was cut off at the token limit (37 tokens) before it was complete; raise Max tokens "
        "to let it finish."]


def test_a_disabled_or_missing_server_is_a_problem_line_and_offers_nothing():
    with ToolSet.open([ToolServer("off", command=("true",), enabled=False),
                       ToolServer("gone", command=("no-such-mcp-server-xyz",))]) as tools:
        assert not tools and tools.names() == []
        assert tools.problems == [
            "The tool server 'off' is disabled; its tools are not offered.",
            "The tool server 'gone' could not start: the program 'no-such-mcp-server-xyz' was not found. Is it "
            "installed, and on the PATH? Its tools are not offered in this reply."]


def test_grammar_safe_schemas_keep_the_shape_and_drop_what_a_grammar_cannot_enforce():
    schema = {"type": "object", "title": "x", "properties": {"n": {"type": "integer", "minimum": 1, "title": "N"},
              "minimum": {"type": "string", "format": "date"}}, "required": ["n"]}
    assert fallback.grammar_safe(schema) == {"type": "object", "properties": {"n": {"type": "integer"},
                                             "minimum": {"type": "string"}}, "required": ["n"]}


@pytest.mark.slow
def test_real_time_server_through_the_loop_with_progress_of_calls():
    server = ToolServer("time", command=tuple(time_server_command()), timeout_s=30)
    step = calls_step(("convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}))
    with ToolSet.open([server]) as tools:
        assert tools.names() == ["get_current_time", "convert_time"]
        outcome, events = run(ScriptedModel(step, '{"reply": "21:00 in Tokyo."}'), tools)
    [call] = outcome.calls
    assert (call.server, call.status) == ("time", "done")
    assert json.loads(call.result)["target"]["datetime"].endswith("T21:00:00+09:00")
    assert call.structured["time_difference"] == "+9.0h"


@pytest.mark.slow
def test_real_gemma_calls_the_real_time_tool_under_the_grammar_and_continues(gemma_path):
    """The demo model has no tool format: the grammar makes its call parse and fit the tool's schema."""
    from engines.llama.engine import LlamaCppEngine

    engine = LlamaCppEngine()
    engine.load(TextLoadSpec(str(gemma_path), context_length=2048, threads=2), lambda e: None)

    def generate(request):
        events = []
        result = engine.generate(request, events.append, _never())
        yield from events
        yield FinishedEvent(result)

    server = ToolServer("time", command=tuple(time_server_command()), timeout_s=30)
    request = TextRequest((ChatMessage("user", "What time is it in Tokyo? Use the time tools."),),
                          SamplingParams(max_tokens=120, temperature=0.7, seed=3))
    events = []
    try:
        with ToolSet.open([server]) as tools:
            schemas = {t.name: t.input_schema for t in server_tools(tools)}
            outcome = run_tool_turn(generate, request, tools, Approvals(allow_all=True), events.append,
                                    first_choice="required", max_calls=1)
    finally:
        engine.unload()
    [call] = outcome.calls
    jsonschema.validate(call.arguments, schemas[call.name])  # valid by construction, and checked
    assert call.status in ("done", "error")  # the server ran it: a time, or its own words on a made-up zone
    assert call.result and not call.result.startswith("Error: the arguments")
    assert statuses(events)[-1] == (call.name, call.status)
    # It continued: the second step saw the result and wrote a reply under the reply-only grammar.
    assert outcome.result.finish_reason in ("stop", "length")
    assert json.loads(outcome.result.text) == {"reply": outcome.text} or outcome.result.finish_reason == "length"


def server_tools(tools: ToolSet):
    return [tools.get(name).listed for name in tools.names()]


def _never():
    import threading

    return threading.Event()
