"""Images reach a vision model through llama.cpp's mtmd: the tiny Gemma 3 VLM, in-process and in the engine host.

The model has random weights, so its replies are noise; what is checked is
that the image reaches it: the prompt grows by exactly the image's tokens
(16 embeddings and the projector's <start_of_image>/<end_of_image>), mtmd
encodes it (its own log line), and a different image changes the reply
while the same image gives the same one.
"""

import io
import random
import threading

import pytest

from engines.api import ChatMessage, FinishedEvent, SamplingParams, TextLoadSpec, TextRequest
from engines.errors import EngineError, ErrorKind
from tests.fixtures.bad_images import header_only_png, real_png
from tests.fixtures.tiny_vlm import tiny_vlm  # noqa: F401  (session fixture)

pytest.importorskip("llama_cpp")
from engines.llama.engine import LlamaCppEngine  # noqa: E402
from engines.llama.native_log import NATIVE_LOG  # noqa: E402

GREEDY = SamplingParams(max_tokens=8, temperature=0.0, seed=1)
WRAPPER_TOKENS = 2  # <start_of_image> and <end_of_image>, which mtmd adds around a Gemma 3 image


def noise_png(seed: int, size=(64, 48)) -> bytes:
    from PIL import Image

    rnd = random.Random(seed)
    image = Image.frombytes("RGB", size, bytes(rnd.randrange(256) for _ in range(size[0] * size[1] * 3)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def vision_engine(tiny_vlm):  # noqa: F811
    engine = LlamaCppEngine()
    info = engine.load(TextLoadSpec(str(tiny_vlm.model), context_length=512, threads=1,
                                    projector=str(tiny_vlm.projector)),
                       lambda event: None)
    assert info.vision
    yield engine
    engine.unload()


def ask(engine, *messages, sampling=GREEDY):
    return engine.generate(TextRequest(tuple(messages), sampling), lambda event: None, threading.Event())


@pytest.mark.slow
def test_an_image_reaches_the_model_through_mtmd(vision_engine, tiny_vlm):  # noqa: F811
    text_only = ask(vision_engine, ChatMessage("user", "describe"))
    NATIVE_LOG.clear()
    seen = ask(vision_engine, ChatMessage("user", "describe", images=(noise_png(1),)))
    assert "image slice encoded" in NATIVE_LOG.text()  # the projector encoded it
    assert seen.image_tokens == tiny_vlm.image_tokens == 16
    newline = 1  # the image goes before the text, on a line of its own
    assert seen.prompt_tokens == text_only.prompt_tokens + tiny_vlm.image_tokens + WRAPPER_TOKENS + newline
    assert text_only.image_tokens == 0

    again = ask(vision_engine, ChatMessage("user", "describe", images=(noise_png(1),)))
    other = ask(vision_engine, ChatMessage("user", "describe", images=(real_png(64, 48, (0, 0, 0)),)))
    assert again.text == seen.text  # the same image, the same greedy reply...
    assert other.text != seen.text  # ...another image, another reply: the model sees it


@pytest.mark.slow
def test_two_images_and_a_follow_up_count_every_image(vision_engine, tiny_vlm):  # noqa: F811
    two = ask(vision_engine, ChatMessage("user", "compare", images=(noise_png(1), noise_png(2))))
    assert two.image_tokens == 2 * tiny_vlm.image_tokens
    follow_up = ask(vision_engine, ChatMessage("user", "compare", images=(noise_png(1), noise_png(2))),
                    ChatMessage("assistant", two.text or "x"), ChatMessage("user", "and now?"))
    assert follow_up.image_tokens == 2 * tiny_vlm.image_tokens
    assert follow_up.prompt_tokens > two.prompt_tokens


@pytest.mark.slow
def test_an_image_message_left_out_of_a_full_context_frees_its_image(tiny_vlm):  # noqa: F811
    engine = LlamaCppEngine()
    engine.load(TextLoadSpec(str(tiny_vlm.model), context_length=128, threads=1, projector=str(tiny_vlm.projector)),
                lambda event: None)
    try:
        history = []
        for i in range(3):
            history += [ChatMessage("user", "look", images=(noise_png(i),)), ChatMessage("assistant", "ok")]
        request = TextRequest((*history, ChatMessage("user", "last")), SamplingParams(max_tokens=16, seed=1),
                              overflow="drop_oldest")
        result = engine.generate(request, lambda event: None, threading.Event())
        assert result.dropped_messages >= 2
        assert result.image_tokens == (3 - result.dropped_messages // 2) * tiny_vlm.image_tokens
        assert result.prompt_tokens + 16 <= 128
    finally:
        engine.unload()


@pytest.mark.slow
def test_bad_images_are_refused_in_words_and_the_chat_goes_on(vision_engine):
    with pytest.raises(EngineError) as broken:
        ask(vision_engine, ChatMessage("user", "what is this", images=(b"not an image at all",)))
    assert broken.value.kind == ErrorKind.BAD_INPUT
    assert broken.value.message == ("Image 1 could not be read (UnidentifiedImageError: cannot identify image "
                                    "file <_io.BytesIO object at " + broken.value.message.split(" at ")[1])
    assert broken.value.message.endswith("). Use a PNG, JPEG or WebP file.")

    with pytest.raises(EngineError) as bomb:
        ask(vision_engine, ChatMessage("user", "and this", images=(real_png(), header_only_png(30000, 30000))))
    assert bomb.value.kind == ErrorKind.BAD_INPUT
    assert bomb.value.message == ("Image 2 has far more than 64 megapixels; scale it down first.")

    after = ask(vision_engine, ChatMessage("user", "describe", images=(real_png(),)))
    assert after.finish_reason in ("stop", "length") and after.image_tokens == 16


@pytest.mark.slow
def test_a_model_without_its_projector_says_so(tiny_vlm):  # noqa: F811
    engine = LlamaCppEngine()
    info = engine.load(TextLoadSpec(str(tiny_vlm.model), context_length=256, threads=1), lambda event: None)
    try:
        assert not info.vision
        with pytest.raises(EngineError) as refused:
            ask(engine, ChatMessage("user", "what is this", images=(real_png(),)))
        assert refused.value.kind == ErrorKind.BAD_INPUT
        assert refused.value.message == (
            f"{info.name} cannot see images: it was loaded without a vision projector (mmproj file). "
            "Choose a vision model with its projector, or send the message without the image.")
        assert ask(engine, ChatMessage("user", "describe")).completion_tokens >= 1  # text still works
    finally:
        engine.unload()


@pytest.mark.slow
def test_a_file_that_is_not_a_projector_is_refused_at_load(tiny_vlm, tmp_path):  # noqa: F811
    engine = LlamaCppEngine()
    with pytest.raises(EngineError) as wrong:
        engine.load(TextLoadSpec(str(tiny_vlm.model), context_length=256, threads=1, projector=str(tiny_vlm.model)),
                    lambda event: None)
    assert wrong.value.kind == ErrorKind.MODEL_FILE
    assert wrong.value.message.startswith(
        f"llama.cpp could not open the vision projector {tiny_vlm.model.name} for this model")
    assert wrong.value.message.endswith("It may belong to another model, or be damaged.")

    with pytest.raises(EngineError) as missing:
        engine.load(TextLoadSpec(str(tiny_vlm.model), context_length=256, threads=1,
                                 projector=str(tmp_path / "mmproj.gguf")),
                    lambda event: None)
    assert missing.value.message == f"The vision projector {tmp_path / 'mmproj.gguf'} does not exist."


@pytest.mark.slow
def test_an_image_reaches_the_model_in_the_engine_host(tmp_path, tiny_vlm):  # noqa: F811
    from engines.host import EngineHost

    host = EngineHost(tmp_path / "host.log")
    try:
        info = host.load("llama_cpp", TextLoadSpec(str(tiny_vlm.model), context_length=512, threads=1,
                                                  projector=str(tiny_vlm.projector)))
        assert info.vision
        request = TextRequest((ChatMessage("user", "describe", images=(noise_png(1),)),), GREEDY)
        events = list(host.generate(request))
        assert isinstance(events[-1], FinishedEvent)
        assert events[-1].result.image_tokens == tiny_vlm.image_tokens
        with pytest.raises(EngineError) as bomb:
            list(host.generate(TextRequest((ChatMessage("user", "x", images=(header_only_png(30000, 30000),)),),
                                           GREEDY)))
        assert bomb.value.message == "Image 1 has far more than 64 megapixels; scale it down first."
    finally:
        host.close()


@pytest.mark.slow
def test_stop_between_two_images_ends_the_reply_and_the_model_goes_on(vision_engine, monkeypatch, tiny_vlm):  # noqa: F811
    cancel = threading.Event()
    projector = vision_engine._vision
    read_image = projector._read_image
    read = []

    def read_then_stop(llm, image):
        read_image(llm, image)
        read.append(image)
        cancel.set()  # Stop pressed while the first image was read: the context now ends on it

    monkeypatch.setattr(projector, "_read_image", read_then_stop)
    request = TextRequest((ChatMessage("user", "two", images=(noise_png(1), noise_png(2))),), GREEDY)
    result = vision_engine.generate(request, lambda event: None, cancel)
    assert (result.finish_reason, result.text, len(read)) == ("cancelled", "", 1)
    monkeypatch.undo()
    after = ask(vision_engine, ChatMessage("user", "describe", images=(noise_png(1),)))
    fresh = ask(vision_engine, ChatMessage("user", "describe", images=(noise_png(1),)))
    assert after.image_tokens == tiny_vlm.image_tokens and after.text == fresh.text
    assert ask(vision_engine, ChatMessage("user", "describe")).completion_tokens >= 1  # text after images


@pytest.mark.slow
def test_a_follow_up_keeps_the_image_it_already_read(vision_engine, tiny_vlm):  # noqa: F811
    first = ChatMessage("user", "describe", images=(noise_png(3),))
    reply = ask(vision_engine, first)
    follow_up = (first, ChatMessage("assistant", reply.text or "x"), ChatMessage("user", "and the colours?"))
    NATIVE_LOG.clear()
    kept = ask(vision_engine, *follow_up)
    assert "image slice encoded" not in NATIVE_LOG.text()  # not encoded again...
    assert kept.cached_prompt_tokens > reply.prompt_tokens - 2 and kept.image_tokens == tiny_vlm.image_tokens

    engine = LlamaCppEngine()  # ...and the reply is the one a fresh read of the whole conversation gives
    engine.load(TextLoadSpec(str(tiny_vlm.model), context_length=512, threads=1, projector=str(tiny_vlm.projector)),
                lambda event: None)
    try:
        fresh = ask(engine, *follow_up)
    finally:
        engine.unload()
    assert (fresh.text, fresh.prompt_tokens, fresh.cached_prompt_tokens) == (kept.text, kept.prompt_tokens, 0)

    other = (ChatMessage("user", "describe", images=(noise_png(4),)), *follow_up[1:])  # another image there
    NATIVE_LOG.clear()
    changed = ask(vision_engine, *other)
    assert "image slice encoded" in NATIVE_LOG.text() and changed.cached_prompt_tokens < reply.prompt_tokens - 18
