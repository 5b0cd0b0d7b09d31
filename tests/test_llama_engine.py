"""The llama.cpp engine in-process: real llama.cpp on tiny and real GGUF files."""

import threading

import pytest

from engines.api import ChatMessage, NoticeEvent, SamplingParams, TextLoadSpec, TextRequest, TokenEvent
from engines.errors import EngineError, ErrorKind

pytest.importorskip("llama_cpp")
from engines.llama.engine import LlamaCppEngine, default_threads  # noqa: E402


def load(path, ctx=256, threads=1, **kw):
    """One thread unless asked (None: the engine's default, as Gemma uses): a tiny model gains nothing from two,
    and on a busy 2-core box two spinning llama.cpp threads stall each other. Gemma reads and writes faster
    with two."""
    engine = LlamaCppEngine()
    info = engine.load(TextLoadSpec(str(path), context_length=ctx, threads=threads, **kw), lambda e: None)
    return engine, info


def ask(engine, text, **sampling):
    events = []
    request = TextRequest((ChatMessage("user", text),), SamplingParams(**sampling))
    result = engine.generate(request, events.append, threading.Event())
    return result, events


def test_tiny_model_loads_and_streams(tiny_gguf):
    engine, info = load(tiny_gguf, threads=None)
    assert info.architecture == "llama" and info.threads == default_threads()
    assert info.template_source == "fallback"
    result, events = ask(engine, "hello", max_tokens=8, seed=1, temperature=0.8)
    tokens = [e.text for e in events if isinstance(e, TokenEvent)]
    assert result.completion_tokens >= 1 and "".join(tokens) == result.text
    assert result.prompt_tokens > 0 and result.seed == 1
    engine.unload()


def test_same_seed_same_text(tiny_gguf):
    engine, _ = load(tiny_gguf)
    first, _ = ask(engine, "hello there", max_tokens=12, seed=42, temperature=1.0)
    second, _ = ask(engine, "hello there", max_tokens=12, seed=42, temperature=1.0)
    assert first.text == second.text
    engine.unload()


def test_cancel_flag_stops_at_the_next_token(tiny_gguf):
    engine, _ = load(tiny_gguf, ctx=512)
    cancel = threading.Event()
    seen = []

    def emit(event):
        if isinstance(event, TokenEvent):
            seen.append(event)
            if len(seen) == 3:
                cancel.set()

    request = TextRequest((ChatMessage("user", "go"),), SamplingParams(max_tokens=400, temperature=1.0, seed=3, min_p=0.0))
    result = engine.generate(request, emit, cancel)
    assert result.finish_reason == "cancelled"
    assert len(seen) <= 4
    # the model stays loaded and usable
    again, _ = ask(engine, "again", max_tokens=4, seed=1)
    assert again.completion_tokens >= 1
    engine.unload()


def test_empty_prompt_is_refused(tiny_gguf):
    engine, _ = load(tiny_gguf)
    with pytest.raises(EngineError) as info:
        ask(engine, "   ")
    assert info.value.kind == ErrorKind.BAD_INPUT and info.value.message == "The prompt is empty."
    engine.unload()


def test_prompt_longer_than_context_stops_or_drops(tiny_gguf):
    engine, _ = load(tiny_gguf, ctx=128)
    history = []
    for i in range(12):
        history += [ChatMessage("user", f"question {i} is rather long " * 3), ChatMessage("assistant", "answer " * 10)]
    history.append(ChatMessage("user", "last"))
    with pytest.raises(EngineError) as info:
        engine.generate(TextRequest(tuple(history), SamplingParams(max_tokens=8)), lambda e: None, threading.Event())
    assert info.value.kind == ErrorKind.CONTEXT_OVERFLOW
    notices = []
    result = engine.generate(
        TextRequest(tuple(history), SamplingParams(max_tokens=8, seed=1), overflow="drop_oldest"),
        notices.append,
        threading.Event(),
    )
    assert result.dropped_messages > 0 and result.prompt_tokens <= 128
    assert any("oldest" in getattr(n, "message", "") for n in notices)
    engine.unload()


def test_raw_mode_skips_the_template(tiny_gguf):
    engine, _ = load(tiny_gguf)
    request = TextRequest(raw_prompt="Once upon a time", sampling=SamplingParams(max_tokens=5, seed=2))
    result = engine.generate(request, lambda e: None, threading.Event())
    assert result.template == "raw" and result.completion_tokens >= 1
    engine.unload()


@pytest.mark.slow
def test_gemma_uses_the_gemma_fallback_and_answers(gemma_path):
    engine, info = load(gemma_path, ctx=1024, threads=None)
    assert info.architecture == "gemma3"
    assert info.template == "gemma" and info.template_source == "fallback"
    result, events = ask(engine, "Name three colors.", max_tokens=24, seed=7, temperature=0.2)
    assert result.completion_tokens > 0 and result.text.strip()
    assert result.tokens_per_second is not None and result.tokens_per_second > 0  # measured, whatever the speed
    assert result.time_to_first_token_s is not None
    engine.unload()


def test_gguf_chat_template_is_used_when_present(tmp_path):
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    path = write_tiny_llama_gguf(tmp_path / "t.gguf", chat_template=template)
    engine, info = load(path)
    assert info.template_source == "gguf"
    result, _ = ask(engine, "hi", max_tokens=3, seed=1)
    assert result.completion_tokens >= 1
    engine.unload()


def test_broken_gguf_template_falls_back(tmp_path):
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    path = write_tiny_llama_gguf(tmp_path / "broken.gguf", chat_template="{% for m in messages %}{{ m.content ")
    engine, info = load(path)
    assert info.template_source == "fallback"
    result, events = ask(engine, "hi", max_tokens=2, seed=1)
    notices = [e.message for e in events if isinstance(e, NoticeEvent)]
    assert len(notices) == 1 and notices[0].startswith("The model's chat template does not render (TemplateSyntaxError: ")
    assert notices[0].endswith("; using the llama-2 format.")
    engine.unload()


def test_a_gguf_template_gets_the_files_own_bos_token(tmp_path):
    """llama.cpp gives token ids in its metadata as text ("1"): the template still gets "<s>"."""
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    template = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    path = write_tiny_llama_gguf(tmp_path / "bos.gguf", chat_template=template)
    engine, info = load(path)
    assert info.template_source == "gguf"
    rendered = engine._template.render([ChatMessage("user", "hi")])
    assert rendered.prompt == "<s>user: hi\nassistant:" and rendered.added_special
    tokens = engine._tokens.tokenize(rendered, add_bos=False)
    assert tokens[0] == 1 and tokens.count(1) == 1  # <s>, once
    engine.unload()


@pytest.mark.slow
def test_gemma_with_a_q8_0_cache_generates_and_its_cache_is_about_half(gemma_path):
    """Real llama.cpp: the q8_0 cache it allocates is 34/64 of the f16 one, and the model still answers."""
    engine, f16 = load(gemma_path, ctx=1024, threads=None)
    engine.unload()
    assert f16.cache_type == "f16" and not f16.flash_attention and f16.kv_cache_bytes
    progress = []
    engine = LlamaCppEngine()
    q8 = engine.load(TextLoadSpec(str(gemma_path), context_length=1024, cache_type="q8_0"), progress.append)
    assert q8.cache_type == "q8_0" and q8.flash_attention
    assert any("q8_0 context cache (flash attention on)" in e.message for e in progress)
    assert "K (q8_0)" in engine._native_log.text() and "V (q8_0)" in engine._native_log.text()
    assert abs(q8.kv_cache_bytes / f16.kv_cache_bytes - 34 / 64) < 0.02
    result, _ = ask(engine, "Name three colors.", max_tokens=8, seed=7, temperature=0.2)
    assert result.completion_tokens > 0 and result.text.strip()
    engine.unload()


def test_a_cache_type_llama_cpp_refuses_is_one_clear_sentence(tiny_gguf):
    """The tiny model's heads are 16 wide: llama.cpp cannot split them into q8_0's blocks of 32."""
    with pytest.raises(EngineError) as info:
        load(tiny_gguf, cache_type="q8_0")
    message = info.value.message
    assert info.value.kind == ErrorKind.UNSUPPORTED and "\n" not in message
    assert "q8_0 context cache" in message and "n_embd_head_k=16" in message and "Choose the f16" in message
    engine, ok = load(tiny_gguf)  # f16 still loads
    assert ok.cache_type == "f16"
    engine.unload()


def test_an_unknown_cache_type_is_bad_input(tiny_gguf):
    with pytest.raises(EngineError) as info:
        load(tiny_gguf, cache_type="q5_1")
    assert info.value.kind == ErrorKind.BAD_INPUT and "f16, q8_0, q4_0" in info.value.message
