"""The prompt cache follows each conversation: live prefix, saved states in memory and on disk, on real llama.cpp."""

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from engines.api import ChatMessage, SamplingParams, TextLoadSpec, TextRequest

pytest.importorskip("llama_cpp")
import engines.llama.prompt_cache as prompt_cache  # noqa: E402
from engines.llama.context_state import SavedState  # noqa: E402
from engines.llama.engine import LlamaCppEngine  # noqa: E402
from engines.llama.state_store import StateStore  # noqa: E402

LONG_A = [ChatMessage("user", "alpha " * 150)]
LONG_B = [ChatMessage("user", "beta " * 120)]


def load(path, ctx=1024, threads=1):
    """One thread for the tiny models (they gain nothing from two, and on a busy 2-core box two stall each other);
    Gemma passes None, the engine's default: it reads and writes faster with two."""
    engine = LlamaCppEngine()
    engine.load(TextLoadSpec(str(path), context_length=ctx, threads=threads), lambda e: None)
    return engine


def ask(engine, messages, key=None, seed=5, max_tokens=12, temperature=1.0):
    request = TextRequest(tuple(messages), SamplingParams(max_tokens=max_tokens, seed=seed, temperature=temperature),
                          cache_key=key)
    return engine.generate(request, lambda e: None, threading.Event())


def state_files(home: Path) -> list[Path]:
    return sorted((home / "cache" / "prompt-states").glob("*/*.state"))


@pytest.fixture
def captures(monkeypatch):
    """Counts the states taken from llama.cpp (each one is a copy of the whole KV cache)."""
    taken = []
    real = prompt_cache.capture

    def counting(llm, key):
        state = real(llm, key)
        taken.append(key)
        return state

    monkeypatch.setattr(prompt_cache, "capture", counting)
    return taken


def test_a_follow_up_reads_only_the_new_message_and_saves_nothing(tiny_gguf, captures):
    engine = load(tiny_gguf)
    first = ask(engine, LONG_A, "A")
    assert first.cached_prompt_tokens == 0
    follow = ask(engine, LONG_A + [ChatMessage("assistant", first.text), ChatMessage("user", "and then?")], "A")
    assert follow.cached_prompt_tokens >= first.prompt_tokens
    assert captures == []  # the decode path never copies the cache
    engine.unload()


def test_switching_to_another_chat_and_back_restores_the_first(tiny_gguf, captures):
    engine = load(tiny_gguf)
    a1 = ask(engine, LONG_A, "A")
    again = ask(engine, LONG_A, "A")  # the same prompt, from the live context
    b = ask(engine, LONG_B, "B")
    assert b.cached_prompt_tokens < 16 and captures == ["A"]  # A was saved before B overwrote it
    a2 = ask(engine, LONG_A, "A")
    assert a2.cached_prompt_tokens == a2.prompt_tokens - 1  # only the last prompt token is read again
    assert captures == ["A", "B"]
    assert a2.text == again.text  # the same seed gives the same tokens with a restored state
    assert a1.prompt_tokens == a2.prompt_tokens
    engine.unload()


def test_a_client_resending_its_history_without_a_key_finds_it(tiny_gguf):
    engine = load(tiny_gguf)
    a = ask(engine, LONG_A)
    ask(engine, LONG_B)
    history = LONG_A + [ChatMessage("assistant", a.text), ChatMessage("user", "go on")]
    resent = ask(engine, history)
    assert resent.cached_prompt_tokens >= a.prompt_tokens
    engine.unload()


def test_a_conversation_survives_the_engine_on_disk(tiny_gguf, atelier_home):
    engine = load(tiny_gguf)
    a = ask(engine, LONG_A, "A")
    engine.unload()  # the live conversation goes to disk
    files = state_files(atelier_home)
    assert len(files) == 1 and files[0].stat().st_size > 10_000
    fresh = load(tiny_gguf)
    follow = ask(fresh, LONG_A + [ChatMessage("assistant", a.text), ChatMessage("user", "more")], "A")
    assert follow.cached_prompt_tokens >= a.prompt_tokens
    fresh.unload()


def test_a_changed_model_file_never_gets_an_old_state(tmp_path, atelier_home):
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    path = write_tiny_llama_gguf(tmp_path / "m.gguf")
    engine = load(path)
    ask(engine, LONG_A, "A")
    engine.unload()
    stat = path.stat()
    write_tiny_llama_gguf(path, seed=99)  # other weights, same name and size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    engine = load(path)
    again = ask(engine, LONG_A, "A")
    assert again.cached_prompt_tokens == 0
    engine.unload()
    assert len({f.parent for f in state_files(atelier_home)}) == 2  # a folder per model identity


def test_a_state_llama_cpp_refuses_is_dropped_and_the_prompt_read_instead(tiny_gguf, tmp_path, atelier_home):
    """A state file from another model layout, under this model's name: llama.cpp says no, the reply still comes."""
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    engine = load(tiny_gguf)
    expected = ask(engine, LONG_A, "A", temperature=0.0)
    engine.unload()
    (good,) = state_files(atelier_home)
    foreign = load(write_tiny_llama_gguf(tmp_path / "deeper.gguf", n_layers=3))
    ask(foreign, LONG_A, "A", temperature=0.0)
    foreign.unload()
    foreign_file = next(f for f in state_files(atelier_home) if f.parent != good.parent)
    good.write_bytes(foreign_file.read_bytes())  # same tokens, a three-layer state
    engine = load(tiny_gguf)
    result = ask(engine, LONG_A, "A", temperature=0.0)
    assert result.cached_prompt_tokens == 0 and result.text == expected.text
    assert not good.exists()  # refused once, then gone
    engine.unload()


def test_damaged_state_files_are_misses_and_go(tiny_gguf, atelier_home):
    engine = load(tiny_gguf)
    a = ask(engine, LONG_A, "A")
    engine.unload()
    (good,) = state_files(atelier_home)
    good.write_bytes(good.read_bytes()[:5000])  # torn: the tokens are there, the state is not
    (good.parent / "garbage.state").write_bytes(b"not a state at all")
    engine = load(tiny_gguf)
    result = ask(engine, LONG_A, "A")
    assert result.cached_prompt_tokens == 0 and result.prompt_tokens == a.prompt_tokens
    assert not (good.parent / "garbage.state").exists()
    engine.unload()


def test_memory_holds_what_its_budget_allows_and_disk_keeps_the_rest(tiny_gguf, atelier_home):
    engine = load(tiny_gguf)
    one_state = None
    for i in range(4):
        ask(engine, [ChatMessage("user", f"conversation {i} " + "word " * 120)], f"c{i}")
        if one_state is None and engine._prompt_cache.states_in_ram:
            one_state = next(iter(engine._prompt_cache._ram.values())).nbytes
    cache = engine._prompt_cache
    cache._fixed_budget = int(one_state * 1.5)
    ask(engine, [ChatMessage("user", "a last short one " * 40)], "last")  # saves c3, trims memory to one state
    assert cache.states_in_ram == 1
    engine._prompt_cache._store.flush(timeout=30)
    assert len(state_files(atelier_home)) == 4  # c0..c3 on disk
    back = ask(engine, [ChatMessage("user", "conversation 0 " + "word " * 120)], "c0")
    assert back.cached_prompt_tokens == back.prompt_tokens - 1  # read back from disk
    engine.unload()


def test_the_disk_keeps_its_budget_least_recently_used_first(tmp_path):
    store = StateStore(tmp_path, "model", max_bytes=250_000)
    for i in range(4):
        tokens = np.arange(i * 1000, i * 1000 + 100, dtype=np.int32)
        store.save_now(SavedState(tokens, bytearray(100_000), key=f"k{i}"))
    kept = sorted(e.key for e in store.entries())
    assert kept == ["k2", "k3"]  # 2 x ~100 KB fit in 250 KB; the two oldest went


def test_the_memory_budget_is_eight_full_contexts_at_most_and_a_tenth_of_free_memory():
    import psutil

    cache = prompt_cache.PromptCache(n_ctx=4096)
    sample = SavedState(np.arange(1000, dtype=np.int32), bytearray(18_000_000))  # ~18 KB a token, like Gemma 3 270M
    budget = cache.ram_budget(sample)
    per_token = sample.nbytes / 1000
    assert budget <= 8 * per_token * 4096 + 1
    assert budget <= 0.10 * psutil.virtual_memory().available + 1


@pytest.mark.slow
def test_gemma_gives_the_same_tokens_with_and_without_a_restored_state(gemma_path):
    """Real Gemma 3 270M, sampled at temperature 1 with a seed: the restored KV cache is exactly the one read."""
    engine = load(gemma_path, ctx=2048, threads=None)
    story = [ChatMessage("user", " ".join(f"Line {i}: the keeper counted {i} ships." for i in range(20)))]
    first = ask(engine, story, "story", seed=11, max_tokens=16)
    live = ask(engine, story, "story", seed=11, max_tokens=16)
    other = ask(engine, [ChatMessage("user", "Tell me about cats.")], "cats", seed=11, max_tokens=8)
    restored = ask(engine, story, "story", seed=11, max_tokens=16)
    assert other.cached_prompt_tokens < 8
    assert live.cached_prompt_tokens == restored.cached_prompt_tokens == first.prompt_tokens - 1
    assert restored.text == live.text == first.text
    engine.unload()


@pytest.mark.slow
def test_a_restored_gemma_state_keeps_the_cells_its_sliding_window_needs(gemma_path):
    """Gemma 3 attends over a 512-token window in 5 of 6 layers, and llama.cpp's per-sequence state drops the
    cells that slid out of it. A follow-up that leaves the saved state a few tokens before its end needs them:
    restored and then cut back, the context must give exactly the logits of the live context cut back."""
    import llama_cpp

    from engines.llama.context_state import capture, restore

    engine = load(gemma_path, ctx=2048, threads=None)
    llm = engine._llm
    prompt = llm.tokenize(" ".join(f"w{i}" for i in range(330)).encode(), add_bos=True)  # ~1,200 tokens
    reply = llm.tokenize(b" and then the keeper climbed the stairs to light the lamp for the ships", add_bos=False)
    follow = llm.tokenize(b" Meanwhile the cat slept by the warm stove", add_bos=False)
    assert len(prompt) > 1024 and len(reply) > 8

    def logits_after_cutting_back() -> np.ndarray:
        assert llm._ctx.kv_cache_seq_rm(-1, len(prompt), -1)
        llm.n_tokens = len(prompt)
        llm.eval(follow)
        row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).copy()

    llm.reset()
    llm.eval(prompt + reply)
    state = capture(llm, "story")
    live = logits_after_cutting_back()
    llm.reset()
    assert restore(llm, state)
    restored = logits_after_cutting_back()
    assert np.array_equal(live, restored)
    engine.unload()


def test_a_state_pushed_out_of_memory_by_the_save_before_it_is_still_restored(tiny_gguf):
    """Memory for one state, and no disk: saving B must not lose A, which is about to be restored."""
    engine = load(tiny_gguf)
    cache = engine._prompt_cache = prompt_cache.PromptCache(n_ctx=1024, store=None)
    ask(engine, LONG_A, "A")
    ask(engine, LONG_B, "B")  # saves A
    (saved_a,) = cache._ram.values()
    cache._fixed_budget = int(saved_a.nbytes * 1.5)
    back = ask(engine, LONG_A, "A")  # saves B, which pushes A out of memory, then restores A
    assert cache.states_in_ram == 1 and next(iter(cache._ram.values())).key == "B"
    assert back.cached_prompt_tokens == back.prompt_tokens - 1
    engine.unload()


@pytest.mark.slow
def test_a_restored_and_extended_gemma_context_is_saved_again_and_cut_back_exactly(gemma_path):
    """After a restore llama.cpp puts new tokens in the cells that slid out of Gemma's window: the context then
    starts above position 0 in those layers. It must still be saved when another chat comes, and a cut that
    stays within what it holds must give the live context's logits, bit for bit; a deeper cut is refused."""
    import llama_cpp

    from engines.llama.context_state import capture, exact_from, live_floor, restore, sliding_window

    engine = load(gemma_path, ctx=2048, threads=None)
    llm = engine._llm
    window = sliding_window(llm)
    prompt = llm.tokenize(" ".join(f"w{i}" for i in range(330)).encode(), add_bos=True)
    reply = llm.tokenize(b" and then the keeper climbed the stairs to light the lamp", add_bos=False)
    more = llm.tokenize(b" for the ships that came in from the sea at night", add_bos=False)
    follow = llm.tokenize(b" Meanwhile the cat slept by the warm stove", add_bos=False)
    assert window == 512 and len(prompt) > 2 * window

    llm.reset()
    llm.eval(prompt)
    assert restore(llm, capture(llm, "story"))
    llm.eval(reply + more)  # extended after a restore: the oldest window cells are reused
    floor = live_floor(llm)
    assert 0 < floor <= len(reply + more)
    saved = capture(llm, "story")
    assert saved is not None and saved.floor == floor
    cut = len(prompt) + len(reply)
    assert exact_from(floor, cut, window) and not exact_from(floor, floor + window - 2, window)

    def logits_after_cutting_back() -> np.ndarray:
        assert llm._ctx.kv_cache_seq_rm(-1, cut, -1)
        llm.n_tokens = cut
        llm.eval(follow)
        row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).copy()

    live = logits_after_cutting_back()
    assert restore(llm, saved)
    assert np.array_equal(live, logits_after_cutting_back())
    engine.unload()


@pytest.mark.slow
def test_switching_back_and_forth_keeps_finding_the_latest_turn_on_gemma(gemma_path):
    engine = load(gemma_path, ctx=2048, threads=None)
    story = [ChatMessage("user", " ".join(f"Line {i}: the keeper counted {i} ships." for i in range(45)))]
    reply = ask(engine, story, "story", max_tokens=6, temperature=0.0)
    assert reply.prompt_tokens > 512  # longer than Gemma's 512-token window
    for turn in range(2):
        ask(engine, [ChatMessage("user", f"Cats, question {turn}?")], "cats", max_tokens=4)
        story = story + [ChatMessage("assistant", reply.text), ChatMessage("user", f"And question {turn}?")]
        previous = reply.prompt_tokens
        reply = ask(engine, story, "story", max_tokens=6, temperature=0.0)
        assert reply.cached_prompt_tokens >= previous  # the latest turn's state (restored and extended before)
    engine.unload()


def test_each_request_renders_and_tokenizes_its_prompt_once(tiny_gguf, monkeypatch):
    from engines.llama.prompt_tokens import PromptTokenizer

    engine = load(tiny_gguf)
    # the request itself: the turn's closing tokens read ahead after the reply render it again (test_turn_warmup.py)
    monkeypatch.setattr(engine, "_warm_turn_end", lambda *args: None)
    first = ask(engine, LONG_A, "A")
    follow_up = LONG_A + [ChatMessage("assistant", first.text), ChatMessage("user", "and then?")]
    llm = engine._llm
    texts: list[bytes] = []
    real = llm.tokenize

    def counting(text, *args, **kwargs):
        texts.append(text)
        return real(text, *args, **kwargs)

    llm.tokenize = counting
    try:
        result = ask(engine, follow_up, "A")
    finally:
        del llm.tokenize
    assert len([t for t in texts if b"and then?" in t]) == 1  # not once to count it and once to send it
    rendered = engine._template.render(list(follow_up))
    assert result.prompt_tokens == len(PromptTokenizer(llm).tokenize(rendered, add_bos=not rendered.added_special))
    engine.unload()


def test_a_follow_up_tokenizes_only_its_new_text_into_the_same_tokens(gemma_path):
    import llama_cpp

    from engines.llama.backends import ensure_backends_loaded
    from engines.llama.prompt_tokens import PromptTokenizer
    from engines.llama.templates import fallback_template

    ensure_backends_loaded()
    llm = llama_cpp.Llama(model_path=str(gemma_path), vocab_only=True, verbose=False)
    template = fallback_template("gemma3", None)
    history = [ChatMessage("system", "Be brief."), ChatMessage("user", "alpha " * 150),
               ChatMessage("assistant", "Alpha, many times.")]
    follow_up = history + [ChatMessage("user", "and then?")]
    tokenizer = PromptTokenizer(llm)
    rendered = template.render(history)
    tokenizer.tokenize(rendered, add_bos=not rendered.added_special)
    texts: list[bytes] = []
    real = llm.tokenize

    def counting(text, *args, **kwargs):
        texts.append(text)
        return real(text, *args, **kwargs)

    llm.tokenize = counting
    rendered = template.render(follow_up)
    try:
        tokens = tokenizer.tokenize(rendered, add_bos=not rendered.added_special)
    finally:
        del llm.tokenize
    assert texts and [t for t in texts if b"alpha" in t or b"Alpha" in t] == []  # the history's runs are kept
    assert any(b"and then?" in t for t in texts)
    assert tokens == PromptTokenizer(llm).tokenize(rendered, add_bos=not rendered.added_special)
    assert tokens.count(105) == 4  # <start_of_turn>: user (with the system prompt), model, user, model
    llm.close()

def test_the_run_token_cache_keeps_its_bound_least_recently_used_first():
    from array import array

    from engines.llama.prompt_tokens import _RunTokens

    runs = _RunTokens(max_chars=10)
    runs.put("aaaa", array("i", [1]))
    runs.put("bbbb", array("i", [2]))
    assert list(runs.get("aaaa")) == [1]  # now the most recently used
    runs.put("cccc", array("i", [3]))  # 12 characters: the least recently used run goes
    assert runs.get("bbbb") is None and list(runs.get("aaaa")) == [1] and list(runs.get("cccc")) == [3]
    runs.put("x" * 11, array("i", [4]))  # longer than the whole budget: not kept, nothing dropped
    assert runs.get("x" * 11) is None and len(runs) == 2
