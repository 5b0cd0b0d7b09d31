"""The official ``openai`` client against a real server: real llama.cpp on the tiny GGUF and on Gemma 3 270M.

The tiny model (random weights) is fast and, with a seed, deterministic, so
the streamed and the whole answers must be the same text; Gemma is the
real model a user first meets, and the one that can fill a JSON schema.
"""

from __future__ import annotations

import json

import openai
import pytest

from tests.fixtures.api_server import start_server
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.slow  # every test here runs llama.cpp end to end
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    home = tmp_path_factory.mktemp("api-tiny")
    model = write_tiny_llama_gguf(home / "tiny-llama.gguf", context_length=512)
    running = start_server(home, {"tiny": model}, context_length=256, threads=1)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def gemma(tmp_path_factory, gemma_path):
    running = start_server(tmp_path_factory.mktemp("api-gemma"), {"gemma": gemma_path}, context_length=1024)
    yield running
    running.stop()


def test_models_lists_the_installed_models_with_their_kind(tiny):
    models = {model.id: model for model in tiny.openai().models.list()}
    assert tiny.ids["tiny"] in models
    assert models[tiny.ids["tiny"]].owned_by == "atelier"
    assert models[tiny.ids["tiny"]].model_extra["kind"] == "chat"
    assert tiny.openai().models.retrieve(tiny.ids["tiny"]).id == tiny.ids["tiny"]
    with pytest.raises(openai.NotFoundError):
        tiny.openai().models.retrieve("local/nothing")


def test_chat_whole_and_streamed_give_the_same_reply_and_usage(tiny):
    client, model = tiny.openai(), tiny.ids["tiny"]
    whole = client.chat.completions.create(model=model, messages=CHAT, max_tokens=12, seed=7, temperature=0.8)
    chunks = list(client.chat.completions.create(model=model, messages=CHAT, max_tokens=12, seed=7, temperature=0.8,
                                                 stream=True, stream_options={"include_usage": True}))
    assert whole.object == "chat.completion"
    assert whole.model == model
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 12
    assert whole.usage.prompt_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 12
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == whole.choices[0].message.content
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert len({chunk.id for chunk in chunks}) == 1


def test_streaming_without_include_usage_sends_no_usage(tiny):
    chunks = list(tiny.openai().chat.completions.create(model=tiny.ids["tiny"], messages=CHAT, max_tokens=4, seed=1,
                                                        stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_completions_whole_and_streamed(tiny):
    client, model = tiny.openai(), tiny.ids["tiny"]
    whole = client.completions.create(model=model, prompt="the model is", max_tokens=10, seed=3)
    chunks = list(client.completions.create(model=model, prompt="the model is", max_tokens=10, seed=3, stream=True,
                                            stream_options={"include_usage": True}))
    assert whole.object == "text_completion"
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 10
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == 10


def test_completions_default_to_16_tokens_as_openai_does(tiny):
    whole = tiny.openai().completions.create(model=tiny.ids["tiny"], prompt="hi", seed=2)
    assert whole.usage.completion_tokens == 16


def test_a_prompt_longer_than_the_context_is_context_length_exceeded(tiny):
    long_chat = [{"role": "user", "content": "Hello world " * 400}]
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as overflow:
            result = tiny.openai().chat.completions.create(model=tiny.ids["tiny"], messages=long_chat, stream=stream)
            list(result)
        assert overflow.value.code == "context_length_exceeded"
        assert overflow.value.param == "messages"
        assert "256" in overflow.value.message  # the context it did not fit in
    assert tiny.is_up()


def test_unsupported_parameters_are_refused_in_words(tiny):
    client, model = tiny.openai(), tiny.ids["tiny"]
    with pytest.raises(openai.BadRequestError) as several:
        client.chat.completions.create(model=model, messages=CHAT, n=2)
    assert several.value.message == "Error code: 400 - n must be 1: Atelier generates one choice per request (got 2)."
    with pytest.raises(openai.BadRequestError) as audio:  # images: tests/test_vision_server.py
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}])
    assert audio.value.param == "messages[0].content"
    assert audio.value.body["message"] == ("'messages[0].content' has a part of type 'input_audio'; only text parts "
                                           "(and image_url parts in user messages) are supported.")
    with pytest.raises(openai.BadRequestError) as embedding:
        client.embeddings.create(model=model, input="hi")
    assert embedding.value.body["message"] == f"'{model}' is a chat model, but this needs an embedding model."
    assert tiny.is_up()


def test_text_parts_and_developer_messages_are_taken(tiny):
    reply = tiny.openai().chat.completions.create(model=tiny.ids["tiny"], max_tokens=3, seed=1, messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]}])
    assert reply.usage.completion_tokens == 3


# ---- the real model ------------------------------------------------------------------


def test_gemma_answers_whole_and_streamed(gemma):
    client, model = gemma.openai(), gemma.ids["gemma"]
    prompt = [{"role": "user", "content": "The three primary colors are"}]
    whole = client.chat.completions.create(model=model, messages=prompt, max_tokens=24, seed=5, temperature=0.0)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model=model, messages=prompt, max_tokens=24, seed=5, temperature=0.0, stream=True) if chunk.choices)
    assert whole.choices[0].message.content.strip()
    assert streamed == whole.choices[0].message.content
    assert whole.usage.prompt_tokens > 5


def test_a_stop_sequence_ends_the_reply_before_it(gemma):
    client, model = gemma.openai(), gemma.ids["gemma"]
    options = dict(model=model, prompt="The three primary colors are", max_tokens=32, temperature=0.0)
    text = client.completions.create(**options).choices[0].text
    words = text.split()
    assert len(words) >= 4, f"Gemma's reply is too short to pick a stop sequence from: {text!r}"
    stop = words[2]
    stopped = client.completions.create(**options, stop=[stop])
    assert stopped.choices[0].text == text[:text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    streamed = "".join(chunk.choices[0].text for chunk in client.completions.create(**options, stop=[stop], stream=True))
    assert streamed == stopped.choices[0].text


def test_gemma_follows_a_json_schema(gemma):
    schema = {"type": "object", "additionalProperties": False, "required": ["name", "age"], "properties": {
        "name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"}}}
    reply = gemma.openai().chat.completions.create(
        model=gemma.ids["gemma"], max_tokens=80, seed=1, temperature=0.7,
        messages=[{"role": "user", "content": "Invent a person. Answer in JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    person = json.loads(reply.choices[0].message.content)
    assert set(person) == {"name", "age"}
    assert isinstance(person["name"], str) and len(person["name"]) <= 24
    assert isinstance(person["age"], int)


def test_gemma_json_object_mode_gives_an_object(gemma):
    reply = gemma.openai().chat.completions.create(
        model=gemma.ids["gemma"], max_tokens=60, seed=2, temperature=0.0, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Give a colour as JSON."}])
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    else:  # cut off by max_tokens: still the start of an object
        assert reply.choices[0].message.content.lstrip().startswith("{")


def test_an_unusable_schema_is_a_400_naming_response_format(gemma):
    with pytest.raises(openai.BadRequestError) as refused:
        gemma.openai().chat.completions.create(
            model=gemma.ids["gemma"], max_tokens=8, messages=CHAT,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}})
    assert refused.value.param == "response_format"
    assert gemma.is_up()
