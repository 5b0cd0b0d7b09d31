"""Images through the API server: OpenAI image_url parts (data: URLs) reach a served vision model through mtmd.

A real ApiServer on 127.0.0.1 with the official openai client, serving the
tiny Gemma 3 VLM with its projector beside it, and the same weights without
one.
"""

from __future__ import annotations

import base64
import shutil

import openai
import pytest

from tests.fixtures.api_server import start_server
from tests.fixtures.bad_images import header_only_png, real_png
from tests.fixtures.tiny_vlm import tiny_vlm  # noqa: F401  (session fixture)

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_vlm):  # noqa: F811
    home = tmp_path_factory.mktemp("api-vision")
    (home / "vlm").mkdir()
    (home / "text").mkdir()
    shutil.copy(tiny_vlm.projector, home / "vlm" / "mmproj-tiny-vlm-f32.gguf")
    vision = shutil.copy(tiny_vlm.model, home / "vlm" / "tiny-vlm-f32.gguf")
    text_only = shutil.copy(tiny_vlm.model, home / "text" / "tiny-text-f32.gguf")
    running = start_server(home, {"vision": vision, "text": text_only}, context_length=512, threads=1)
    yield running
    running.stop()


def image_part(data: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()}}


def ask(served, model: str, content, **options):
    return served.openai().chat.completions.create(model=served.ids[model], max_tokens=2, temperature=0,
                                                   messages=[{"role": "user", "content": content}], **options)


@pytest.mark.slow
def test_an_image_url_part_reaches_the_served_vision_model(served, tiny_vlm):  # noqa: F811
    text_only = ask(served, "vision", [{"type": "text", "text": "describe"}])
    seen = ask(served, "vision", [image_part(real_png(32, 24)), {"type": "text", "text": "describe"}])
    newline = 1  # the image goes before the text, on a line of its own
    assert seen.usage.prompt_tokens == text_only.usage.prompt_tokens + tiny_vlm.image_tokens + 2 + newline
    assert seen.choices[0].finish_reason in ("stop", "length")


@pytest.mark.slow
def test_images_the_server_cannot_take_are_a_400_in_words(served):
    cases = [
        ({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
         "'messages[0].content[0]' names an image by URL; send it inline as a data: URL (data:image/png;base64,...): "
         "Atelier does not fetch images from the network."),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}},
         "'messages[0].content[0]' is not valid base64."),
        (image_part(header_only_png(30000, 30000)),
         "The image in 'messages[0].content[0]' has far more than 64 megapixels; scale it down first."),
    ]
    for part, message in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            ask(served, "vision", [part, {"type": "text", "text": "what is this"}])
        assert refused.value.body["message"] == message
        assert refused.value.param == "messages[0].content[0]"
    with pytest.raises(openai.BadRequestError) as blind:
        ask(served, "text", [image_part(real_png()), {"type": "text", "text": "what is this"}])
    assert blind.value.body["message"].endswith("cannot see images: it was loaded without a vision projector "
                                                "(mmproj file). Choose a vision model with its projector, or send "
                                                "the message without the image.")
    assert served.is_up()


@pytest.mark.slow
def test_an_anthropic_image_block_reaches_the_served_vision_model(served, tiny_vlm):  # noqa: F811
    import anthropic

    client, model = served.anthropic(), served.ids["vision"]
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(real_png(32, 24)).decode()}}
    text_only = client.messages.create(model=model, max_tokens=2, messages=[{"role": "user", "content": "describe"}])
    seen = client.messages.create(model=model, max_tokens=2, messages=[{"role": "user", "content": [
        block, {"type": "text", "text": "describe"}]}])
    assert seen.usage.input_tokens == text_only.usage.input_tokens + tiny_vlm.image_tokens + 2 + 1
    with pytest.raises(anthropic.BadRequestError) as linked:
        client.messages.create(model=model, max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]}])
    assert linked.value.body["error"]["message"] == ("messages.0.content.0: an image must come as a base64 source; "
                                                     "Atelier does not fetch images from the network.")
