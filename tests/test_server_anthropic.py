"""The official ``anthropic`` client against ``/v1/messages`` on real llama.cpp (the tiny GGUF, seeded)."""

from __future__ import annotations

import anthropic
import pytest

from tests.fixtures.api_server import start_server
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.slow  # every test here runs llama.cpp end to end
MESSAGES = [{"role": "user", "content": "Hello world"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    home = tmp_path_factory.mktemp("anthropic-tiny")
    running = start_server(home, {"tiny": write_tiny_llama_gguf(home / "tiny-llama.gguf")}, context_length=256,
                           threads=1)
    yield running
    running.stop()


def test_a_message_whole(tiny):
    message = tiny.anthropic().messages.create(model=tiny.ids["tiny"], max_tokens=10, system="Be brief.",
                                               messages=MESSAGES, extra_body={"temperature": 0.5, "top_k": 20})
    assert message.type == "message" and message.role == "assistant"
    assert message.model == tiny.ids["tiny"]
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 10
    assert message.usage.input_tokens > 0


def test_a_message_streamed_has_anthropics_events_in_order_and_the_same_text(tiny):
    client, model = tiny.anthropic(), tiny.ids["tiny"]
    # Greedy (this SDK version takes sampling settings only as extra fields): the same text each time.
    options = dict(model=model, max_tokens=12, messages=MESSAGES, extra_body={"temperature": 0.0},
                   system=[{"type": "text", "text": "Be brief."}], metadata={"user_id": "test"})
    events = list(client.messages.create(**options, stream=True))
    kinds = [event.type for event in events]
    deltas = kinds.count("content_block_delta")
    assert kinds == (["message_start", "content_block_start"] + ["content_block_delta"] * deltas  # the SDK drops pings
                     + ["content_block_stop", "message_delta", "message_stop"])
    streamed = "".join(event.delta.text for event in events if event.type == "content_block_delta")
    assert events[-2].delta.stop_reason == "max_tokens"
    assert events[-2].usage.output_tokens == 12
    with client.messages.stream(**options) as stream:  # the SDK's helper assembles the same message
        final = stream.get_final_message()
    assert final.content[0].text == streamed
    whole = client.messages.create(**options)
    assert whole.content[0].text == streamed


def test_assistant_turns_and_text_blocks_are_taken(tiny):
    message = tiny.anthropic().messages.create(model=tiny.ids["tiny"], max_tokens=4, messages=[
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "the model"}]}])
    assert message.usage.output_tokens == 4


def test_bad_requests_get_anthropics_error_types(tiny):
    client, model = tiny.anthropic(), tiny.ids["tiny"]
    with pytest.raises(anthropic.BadRequestError) as document:  # images: tests/test_vision_server.py
        client.messages.create(model=model, max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "AAAA"}}]}])
    assert document.value.body == {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "messages.0.content: blocks of type 'document' are not supported; send text (and images in "
                   "user turns)."}}
    with pytest.raises(anthropic.BadRequestError) as overflow:
        client.messages.create(model=model, max_tokens=4, messages=[{"role": "user", "content": "Hello " * 600}])
    assert overflow.value.body["error"]["type"] == "invalid_request_error"
    assert "256" in overflow.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as last_turn:
        client.messages.create(model=model, max_tokens=4, messages=[
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}])
    assert last_turn.value.body["error"]["message"] == "The last message must come from the user."
    assert tiny.is_up()
