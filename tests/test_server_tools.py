"""Tool calls over the API, end to end: the official ``openai`` and ``anthropic`` clients, a real server, llama.cpp.

The models are tiny random-weight GGUFs: one carries the real Qwen 2.5
template (its tools and calls in the Hermes syntax), one no template at all
(Atelier's JSON fallback, as for the demo Gemma). Random weights call no
tool on their own, but a required call is held to the call's syntax and the
tool's schema by a grammar, so every forced call below is a real one that
the server must read back and hand to the client. What the engine received
is taken from the scheduler (every request reaches it there), and the
second turn of a round trip is rendered through the model's own template.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from engines.api import ChatMessage, ToolCallRequest
from engines.llama.templates import choose_template
from engines.settings import LoadPrefs
from tests.fixtures.api_server import start_server
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.slow  # every test here runs llama.cpp end to end

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"
QWEN = (TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text()
QWEN_TOKENS = ["<|im_start|>", "<|im_end|>"]
# The other two families the chat reads (tests/test_tool_templates.py): their real templates and control tokens.
OTHERS = {"llama3": ("meta-llama-Llama-3.1-8B-Instruct.jinja",
                     ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"]),
          "mistral": ("mistralai-Mistral-Nemo-Instruct-2407.jinja",
                      ["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                       "[TOOL_RESULTS]", "[/TOOL_RESULTS]"])}
# Enums, a boolean and no extra properties: a call the grammar forces stays short even from random weights.
WEATHER = {"type": "object", "additionalProperties": False, "required": ["city", "unit"], "properties": {
    "city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "hourly": {"type": "boolean"}}}
OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                                  "parameters": WEATHER}},
                {"type": "function", "function": {"name": "get_time", "description": "The time now.",
                                                  "parameters": {"type": "object", "properties": {},
                                                                 "additionalProperties": False}}}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "The weather in a city.", "input_schema": WEATHER}]
ASK = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("api-tools")
    models = {"qwen": write_tiny_llama_gguf(home / "tiny-qwen.gguf", context_length=2048, chat_template=QWEN,
                                            extra_tokens=QWEN_TOKENS),
              "plain": write_tiny_llama_gguf(home / "tiny-plain.gguf", context_length=2048)}
    for family, (source, specials) in OTHERS.items():
        models[family] = write_tiny_llama_gguf(home / f"tiny-{family}.gguf", context_length=2048,
                                               chat_template=(TEMPLATES / source).read_text(), extra_tokens=specials)
    running = start_server(home, models, context_length=2048)
    for model_id in running.ids.values():  # one thread: these models gain nothing from two on a busy box
        running.workspace.settings.load_prefs[model_id] = LoadPrefs(threads=1)
    yield running
    running.stop()


@pytest.fixture
def received(served, monkeypatch):
    """The requests the engine was given, in order (load-only work left out)."""
    seen = []
    submit = served.scheduler.submit

    def spy(work, client, **options):
        if work.request is not None:
            seen.append(work.request)
        return submit(work, client, **options)

    monkeypatch.setattr(served.scheduler, "submit", spy)
    return seen


def _rendered(request) -> str:
    """The prompt the Qwen template makes of what the engine received."""
    template = choose_template({"tokenizer.chat_template": QWEN}, "llama", ["<unk>", "<s>", "</s>"])
    return template.render(request.messages, None, request.tools).prompt


def _streamed_calls(chunks) -> list[dict]:
    """The tool calls of a streamed chat completion, assembled from their deltas as the client's helpers do."""
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    return [calls[index] for index in sorted(calls)]


def test_openai_a_required_call_whole_and_streamed_is_the_same_valid_call(served, received):
    client, model = served.openai(), served.ids["qwen"]
    options = dict(model=model, messages=ASK, tools=OPENAI_TOOLS, tool_choice="required", max_tokens=160, seed=7,
                   temperature=1.0)
    whole = client.chat.completions.create(**options)
    chunks = list(client.chat.completions.create(**options, stream=True, stream_options={"include_usage": True}))
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name in ("get_weather", "get_time")
    if call.function.name == "get_weather":
        jsonschema.validate(json.loads(call.function.arguments), WEATHER)
    # Streamed: no call syntax among the text deltas, then the same call, then finish_reason "tool_calls".
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    [streamed] = _streamed_calls(chunks)
    assert streamed["id"].startswith("call_")
    assert (streamed["name"], json.loads(streamed["arguments"])) == (call.function.name,
                                                                     json.loads(call.function.arguments))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    # The model got both tools through its template, with a call required (held by the grammar).
    assert [(r.tool_choice, [t.name for t in r.tools], r.json_schema) for r in received] == [
        ("required", ["get_weather", "get_time"], None)] * 2


def test_openai_round_trip_sends_the_call_and_its_result_back_through_the_template(served, received):
    client, model = served.openai(), served.ids["qwen"]
    first = client.chat.completions.create(model=model, messages=ASK, tools=OPENAI_TOOLS, max_tokens=160, seed=3,
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}})
    [call] = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER)
    assert [t.name for t in received[0].tools] == ["get_weather"]  # the named tool only, and a call required
    history = ASK + [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    second = client.chat.completions.create(model=model, messages=history, tools=OPENAI_TOOLS, max_tokens=6, seed=3)
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].finish_reason in ("stop", "length")
    sent = received[1]
    assert sent.messages[1:] == (
        ChatMessage("assistant", "", tool_calls=(ToolCallRequest(call.id, "get_weather", arguments),)),
        ChatMessage("tool", '{"temp": 21}', tool_call_id=call.id, name="get_weather"))
    prompt = _rendered(sent)
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
            f'{json.dumps(arguments)}}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n'
            '{"temp": 21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n') in prompt
    assert '"name": "get_time"' in prompt  # both tools offered again ("auto")

    # tool_choice "none": the same conversation, answered without tools (none rendered, none read back).
    none = client.chat.completions.create(model=model, messages=history, tools=OPENAI_TOOLS, tool_choice="none",
                                          max_tokens=6, seed=3)
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason in ("stop", "length")
    assert received[2].tools == () and "<tools>" not in _rendered(received[2])


def test_anthropic_a_required_call_whole_and_streamed(served, received):
    client, model = served.anthropic(), served.ids["qwen"]
    # Greedy (this SDK version takes sampling settings only as extra fields): the same call each time.
    options = dict(model=model, max_tokens=160, messages=ASK, tools=ANTHROPIC_TOOLS, tool_choice={"type": "any"},
                   extra_body={"temperature": 0.0})
    whole = client.messages.create(**options)
    assert whole.stop_reason == "tool_use"
    [block] = whole.content
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "get_weather"
    jsonschema.validate(block.input, WEATHER)
    events = list(client.messages.create(**options, stream=True))
    assert [e.type for e in events] == ["message_start", "content_block_start", "content_block_delta",
                                        "content_block_stop", "message_delta", "message_stop"]
    start, delta = events[1], events[2]
    assert (start.index, start.content_block.type, start.content_block.name) == (0, "tool_use", "get_weather")
    assert start.content_block.id.startswith("toolu_")
    assert delta.delta.type == "input_json_delta"
    assert json.loads(delta.delta.partial_json) == block.input  # greedy: the same call
    assert events[-2].delta.stop_reason == "tool_use"
    with client.messages.stream(**options) as stream:  # the SDK's helper assembles the same block
        final = stream.get_final_message()
    assert [(b.type, b.name, b.input) for b in final.content] == [("tool_use", "get_weather", block.input)]
    assert [r.tool_choice for r in received] == ["required"] * 3


def test_anthropic_round_trip_with_an_error_result(served, received):
    client, model = served.anthropic(), served.ids["qwen"]
    first = client.messages.create(model=model, max_tokens=160, messages=ASK, tools=ANTHROPIC_TOOLS,
                                   tool_choice={"type": "tool", "name": "get_weather"},
                                   extra_body={"temperature": 0.0})
    [block] = first.content
    history = ASK + [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "is_error": True,
                                                   "content": [{"type": "text", "text": "No such city."}]}]}]
    second = client.messages.create(model=model, max_tokens=6, messages=history, tools=ANTHROPIC_TOOLS,
                                    extra_body={"temperature": 0.0})
    assert [b.type for b in second.content] == ["text"] and second.stop_reason in ("end_turn", "max_tokens")
    assert received[1].messages[1:] == (
        ChatMessage("assistant", "", tool_calls=(ToolCallRequest(block.id, "get_weather", block.input),)),
        ChatMessage("tool", "Error: No such city.", tool_call_id=block.id, name="get_weather"))
    assert "<tool_response>\nError: No such city.\n</tool_response>" in _rendered(received[1])


def test_a_model_without_a_tool_template_calls_through_the_json_fallback(served, received):
    client, model = served.openai(), served.ids["plain"]
    reply = client.chat.completions.create(model=model, messages=ASK, tools=OPENAI_TOOLS[:1], tool_choice="required",
                                           max_tokens=120, seed=5)
    assert reply.choices[0].finish_reason == "tool_calls"
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)
    [sent] = received
    assert sent.tools == () and sent.json_schema["required"] == ["tool_calls"]  # held to the fallback's JSON
    assert sent.messages[0].role == "system" and "- get_weather: The weather in a city." in sent.messages[0].content


@pytest.mark.parametrize("family", sorted(OTHERS))
def test_llama_and_mistral_calls_stream_as_tool_calls_never_as_text(served, family):
    chunks = list(served.openai().chat.completions.create(
        model=served.ids[family], messages=ASK, tools=OPENAI_TOOLS[:1], tool_choice="required", max_tokens=160,
        seed=11, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    [call] = _streamed_calls(chunks)
    assert call["name"] == "get_weather"
    jsonschema.validate(json.loads(call["arguments"]), WEATHER)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
