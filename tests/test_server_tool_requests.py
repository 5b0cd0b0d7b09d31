"""Tools on the API server without a model: bad requests are 400s naming the field, and replies are read right.

The bad requests go to a real server on 127.0.0.1 (each is refused before a
model is looked up, so none is installed). How a reply is read, streamed
or whole, is checked on scripted token streams through the routes' own
chunk builder: text before a call streams, the call's syntax never does,
and a call that does not parse comes back as the text the model wrote.
"""

from __future__ import annotations

import json

import pytest

from engines.api import FinishedEvent, ModelInfo, TextResult, TokenEvent
from engines.scheduler.work import Ticket
from engines.server import ApiServer, ServerConfig
from engines.server.directory import ServedModel
from engines.server.openai_text import _event_bytes, _Reply
from engines.server.tool_calls import ReplyReader, ToolOffer
from tests.fixtures.api_server import TOKEN, RunningServer, start_server

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
ASK = [{"role": "user", "content": "Weather in Paris?"}]
CALLED = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("api-tool-requests"))
    yield running
    running.stop()


OPENAI_BAD = [
    ({"tools": [{"type": "function", "function": {"parameters": WEATHER}}]}, "tools[0].function.name",
     "Missing required parameter: 'tools[0].function.name'."),
    ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools[0].function.name",
     "'tools[0].function.name' must be 1 to 64 letters, digits, '_', '-' or '.' (got \"get weather\")."),
    ({"tools": [TOOL, TOOL]}, "tools[1].function.name",
     "Two tools are named 'get_weather' (tools[0].function and tools[1].function); each tool needs its own name."),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"$ref": "https://example.com/x.json"}}}}}]},
     "tools[0].function.parameters",
     "The schema of the tool 'f' ('tools[0].function.parameters') cannot be used: the $ref at /properties/x names "
     "another document (https://example.com/x.json), which is never fetched; put that schema under $defs."),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice",
     "'tool_choice' names the tool 'get_time', which is not among the tools offered (get_weather)."),
    ({"tool_choice": "required"}, "tool_choice",
     "'tool_choice' requires a tool call, but the request offers no tools."),
    ({"tools": [TOOL], "tool_choice": "any"}, "tool_choice",
     "'tool_choice' must be 'auto', 'required', 'none' or {\"type\": \"function\", \"function\": {\"name\": ...}}, "
     "not 'any'."),
    ({"tools": [TOOL], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": WEATHER}}},
     "response_format", "'tools' and 'response_format' cannot be used together: a reply that may call tools cannot "
                        "also be held to a JSON schema."),
    ({"messages": ASK + [CALLED, {"role": "tool", "tool_call_id": "call_2", "content": "18 C"}]},
     "messages[2].tool_call_id",
     "'messages[2].tool_call_id' is 'call_2', which matches no tool call of an earlier assistant message."),
    ({"messages": ASK + [CALLED, {"role": "tool", "content": "18 C"}]}, "messages[2].tool_call_id",
     "'messages[2].tool_call_id' is missing: a tool message answers one call, by its id."),
    ({"messages": ASK + [{**CALLED, "tool_calls": [{**CALLED["tool_calls"][0], "function": {
        "name": "get_weather", "arguments": "{city: Paris}"}}]}, {"role": "tool", "tool_call_id": "call_1",
                                                                  "content": "18 C"}]},
     "messages[1].tool_calls[0].function.arguments",
     "'messages[1].tool_calls[0].function.arguments' is not valid JSON (Expecting property name enclosed in double "
     "quotes)."),
    ({"messages": ASK + [CALLED]}, "messages",
     "The last message calls tools: send their results after it (the server never runs a tool)."),
    ({"messages": ASK + [{"role": "function", "name": "get_weather", "content": "18 C"}]}, "messages[1].role",
     "'messages[1]' has the role 'function', OpenAI's deprecated form of a tool result; send the role 'tool' with "
     "the 'tool_call_id' it answers."),
]


@pytest.mark.parametrize("fields, param, message", OPENAI_BAD)
def test_bad_openai_tool_requests_are_400s_naming_the_field(api, fields, param, message):
    with api.http() as client:
        answer = client.post("/v1/chat/completions", json={"model": "nothing", "messages": ASK, **fields})
    assert answer.status_code == 400
    assert answer.json()["error"] == {"message": message, "type": "invalid_request_error", "param": param,
                                      "code": None}


ANTHROPIC_TOOL = {"name": "get_weather", "input_schema": WEATHER}
ANTHROPIC_BAD = [
    ({"tools": [{"input_schema": WEATHER}]}, "Missing required parameter: 'tools[0].name'."),
    ({"tools": [{"name": "get_weather"}]}, "Missing required parameter: 'tools[0].input_schema'."),
    ({"tools": [ANTHROPIC_TOOL, ANTHROPIC_TOOL]},
     "Two tools are named 'get_weather' (tools[0] and tools[1]); each tool needs its own name."),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
     "'tools[0]' is a server tool of type 'web_search_20250305', which Atelier does not have; only client tools "
     "(name, description, input_schema) can be offered."),
    ({"tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"n": {"type": "array", "minItems": 3,
                                                                                       "maxItems": 1}}}}]},
     "The schema of the tool 'f' ('tools[0].input_schema') cannot be used: minItems 3 is more than maxItems 1 at "
     "/properties/n."),
    ({"tools": [ANTHROPIC_TOOL], "tool_choice": {"type": "tool", "name": "get_time"}},
     "'tool_choice' names the tool 'get_time', which is not among the tools offered (get_weather)."),
    ({"messages": ASK + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "18 C"}]}]},
     "'messages.2.content.0.tool_use_id' is 'toolu_2', which matches no tool call of an earlier assistant message."),
    ({"messages": ASK + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]}]},
     "'messages.2.content.0.content.0' is a block of type 'image'; a tool_result can hold text only."),
]


@pytest.mark.parametrize("fields, message", ANTHROPIC_BAD)
def test_bad_anthropic_tool_requests_are_400s_in_anthropic_s_shape(api, fields, message):
    with api.http() as client:
        answer = client.post("/v1/messages", json={"model": "nothing", "max_tokens": 8, "messages": ASK, **fields})
    assert answer.status_code == 400
    assert answer.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


# ---- reading replies -----------------------------------------------------------------------------


def _result(text: str, finish: str = "stop") -> TextResult:
    return TextResult(text=text, finish_reason=finish, prompt_tokens=5, completion_tokens=9,
                      time_to_first_token_s=0.1, tokens_per_second=10.0, context_length=256, template="t", seed=1)


def _streamed(reader: ReplyReader, text: str, finish: str = "stop") -> list[dict]:
    """The chat chunks of ``text`` arriving three characters per token, as the route sends them."""
    reply = _Reply("chatcmpl", "local/tiny", chat=True, reader=reader)
    events = [TokenEvent(text[i:i + 3]) for i in range(0, len(text), 3)] + [FinishedEvent(_result(text, finish))]
    raw = b"".join(_event_bytes([event], reply, include_usage=False) for event in events)
    return [json.loads(line[6:]) for line in raw.decode().split("\n\n") if line]


def _whole(reader: ReplyReader, text: str, finish: str = "stop") -> dict:
    return _Reply("chatcmpl", "local/tiny", chat=True, reader=reader).whole(_result(text, finish))["choices"][0]


def test_text_before_a_call_streams_and_the_call_s_syntax_never_does():
    text = 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    chunks = _streamed(ReplyReader("native", "hermes"), text)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content", "") for d in deltas) == "Let me look."
    [call] = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert call["index"] == 0 and call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "tool_calls"
    whole = _whole(ReplyReader("native", "hermes"), text)
    assert whole["finish_reason"] == "tool_calls" and whole["message"]["content"] == "Let me look."
    assert whole["message"]["tool_calls"][0]["function"] == call["function"]


def test_a_call_that_does_not_parse_is_the_text_the_model_wrote():
    text = 'Adding.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris",}}</tool_call>'
    chunks = _streamed(ReplyReader("native", "hermes"), text)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    whole = _whole(ReplyReader("native", "hermes"), text)
    assert (whole["message"]["content"], whole["finish_reason"], "tool_calls" in whole["message"]) == (
        text, "stop", False)


def test_a_plain_json_answer_is_held_only_until_it_is_clearly_not_a_call():
    text = '{"answer": 5}'  # Llama 3.1's calls are bare JSON objects too
    chunks = _streamed(ReplyReader("native", "llama3"), text)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_the_json_fallback_streams_the_reply_and_reads_calls_one_at_a_time_when_asked():
    reply = json.dumps({"reply": "It is \"sunny\" in Paris."})
    chunks = _streamed(ReplyReader("fallback"), reply)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == 'It is "sunny" in Paris.'
    calls = json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                                       {"name": "get_weather", "arguments": {"city": "Oslo"}}]})
    assert len(_whole(ReplyReader("fallback"), calls)["message"]["tool_calls"]) == 2
    [only] = _whole(ReplyReader("fallback", parallel=False), calls)["message"]["tool_calls"]
    assert json.loads(only["function"]["arguments"]) == {"city": "Paris"}
    cut = _whole(ReplyReader("fallback"), '{"reply": "It is sun', "length")
    assert (cut["message"]["content"], cut["finish_reason"]) == ("It is sun", "length")


def test_without_tools_offered_every_token_is_text():
    text = '<tool_call>{"name": "x"}</tool_call>'
    offer = ToolOffer((), "none")
    assert ReplyReader.for_offer(offer, "hermes").mode == "plain"
    chunks = _streamed(ReplyReader.for_offer(offer, "hermes"), text)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text


# ---- the real server and clients over a scripted model ---------------------------------------------


class _ScriptedScheduler:
    """The scheduler as the server sees it, over a model that writes the given replies (Hermes syntax).

    Random weights never write text before a call, or a broken call: these replies are what a real
    Qwen could write, streamed three characters per token through real tickets.
    """

    def __init__(self) -> None:
        self.replies: list[str] = []
        self.info = ModelInfo("/m.gguf", "qwen2", "Scripted", 4096, 4096, 1, 0, "qwen", "gguf", False,
                              tools_in_template=True, tool_format="hermes")

    def normalise(self, work):
        return work

    def model_info(self, key):
        return self.info

    def submit(self, work, client, bounded=True):
        ticket = Ticket(work, client, self)
        ticket.model_info = self.info
        text = self.replies.pop(0)
        for start in range(0, len(text), 3):
            ticket._push(TokenEvent(text[start:start + 3]))
        ticket._push(FinishedEvent(_result(text)))
        ticket._finish()
        return ticket

    def _cancel(self, ticket) -> None:
        pass


class _OneModel:
    def find(self, name, kind):
        return ServedModel("local/scripted", "chat", "llama_cpp", "spec")

    def listed(self):
        return [self.find("", "chat")]


@pytest.fixture(scope="module")
def scripted():
    scheduler = _ScriptedScheduler()
    server = ApiServer(scheduler, _OneModel(), config=ServerConfig(port=0, token=TOKEN))
    server.start()
    yield RunningServer(server, scheduler, None)
    server.stop()


SPOKEN_CALL = 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
BROKEN_CALL = 'Adding.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris",}}</tool_call>'


def test_openai_text_then_a_call_streams_the_text_only_then_the_call(scripted):
    scripted.scheduler.replies = [SPOKEN_CALL, SPOKEN_CALL]
    options = dict(model="scripted", messages=ASK, tools=[TOOL])
    chunks = list(scripted.openai().chat.completions.create(**options, stream=True))
    deltas = [c.choices[0].delta for c in chunks]
    assert "".join(d.content or "" for d in deltas) == "Let me look."  # the line break before the call held back
    [call] = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert (call.index, call.type, call.function.name, call.function.arguments) == (
        0, "function", "get_weather", '{"city":"Paris"}')
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    whole = scripted.openai().chat.completions.create(**options).choices[0]
    assert (whole.message.content, whole.finish_reason) == ("Let me look.", "tool_calls")
    assert whole.message.tool_calls[0].function.arguments == '{"city":"Paris"}'


def test_anthropic_text_then_a_call_is_a_text_block_then_a_tool_use_block(scripted):
    scripted.scheduler.replies = [SPOKEN_CALL, SPOKEN_CALL]
    client = scripted.anthropic()
    options = dict(model="scripted", max_tokens=50, messages=ASK, tools=[ANTHROPIC_TOOL])
    events = list(client.messages.create(**options, stream=True))
    kinds = [(e.type, getattr(e, "index", None)) for e in events]
    texts = kinds.count(("content_block_delta", 0))
    assert kinds == ([("message_start", None), ("content_block_start", 0)] + [("content_block_delta", 0)] * texts
                     + [("content_block_stop", 0), ("content_block_start", 1), ("content_block_delta", 1),
                        ("content_block_stop", 1), ("message_delta", None), ("message_stop", None)])
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.index == 0) == "Let me look."
    assert events[-2].delta.stop_reason == "tool_use"
    with client.messages.stream(**options) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert (final.content[0].text, final.content[1].name, final.content[1].input) == (
        "Let me look.", "get_weather", {"city": "Paris"})
    assert final.content[1].id.startswith("toolu_") and final.stop_reason == "tool_use"


def test_a_broken_call_comes_back_as_the_model_s_text_on_both_apis(scripted):
    scripted.scheduler.replies = [BROKEN_CALL, BROKEN_CALL, BROKEN_CALL]
    whole = scripted.openai().chat.completions.create(model="scripted", messages=ASK, tools=[TOOL]).choices[0]
    assert (whole.message.content, whole.message.tool_calls, whole.finish_reason) == (BROKEN_CALL, None, "stop")
    chunks = list(scripted.openai().chat.completions.create(model="scripted", messages=ASK, tools=[TOOL], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == BROKEN_CALL
    message = scripted.anthropic().messages.create(model="scripted", max_tokens=50, messages=ASK,
                                                  tools=[ANTHROPIC_TOOL])
    assert [(b.type, b.text) for b in message.content] == [("text", BROKEN_CALL)] and message.stop_reason == "end_turn"
