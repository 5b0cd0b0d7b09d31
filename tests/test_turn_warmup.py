"""After a reply, the tokens every next user turn starts with are read ahead, so a follow-up reads fewer."""

from __future__ import annotations

import threading

import pytest

from engines.api import ChatMessage, SamplingParams, TextLoadSpec, TextRequest
from engines.llama.turn_warmup import MAX_WARM_TOKENS, closing_tokens, tokens_to_read

pytest.importorskip("llama_cpp")
from engines.llama.engine import LlamaCppEngine  # noqa: E402


def test_the_closing_tokens_are_what_two_next_turns_share() -> None:
    def render(messages) -> list[int]:  # a template that writes a message as its role's number and its letters
        out = []
        for m in messages:
            out += [{"user": 1, "assistant": 2}[m.role]] + [ord(c) for c in m.content] + [0]
        return out + [2]

    chat = [ChatMessage("user", "hi")]
    assert closing_tokens(chat, "yo", render) == [1, ord("h"), ord("i"), 0, 2, ord("y"), ord("o"), 0, 1]
    assert tokens_to_read(list(range(10)), 7) == 3  # three of them are not in the context yet
    assert tokens_to_read(list(range(10)), 10) == 0
    assert tokens_to_read(list(range(100)), 100 - MAX_WARM_TOKENS - 1) == 0  # a history that changed: not ahead


def _ask(engine, messages, warm=True):
    request = TextRequest(tuple(messages), SamplingParams(max_tokens=4, seed=3, temperature=0.0))
    if not warm:
        engine._warm_turn_end = lambda *args: None
    try:
        return engine.generate(request, lambda event: None, threading.Event())
    finally:
        engine.__dict__.pop("_warm_turn_end", None)


@pytest.mark.slow
def test_a_follow_up_on_gemma_finds_the_turn_markers_already_read(gemma_path) -> None:
    """Gemma's closing markers (`<end_of_turn>\\n<start_of_turn>user\\n`) and the reply's last sampled token."""
    engine = LlamaCppEngine()
    engine.load(TextLoadSpec(str(gemma_path), context_length=1024, threads=2), lambda event: None)
    try:
        chat = [ChatMessage("user", "Name a colour.")]
        answers = {}
        for warm in (False, True):
            first = _ask(engine, chat, warm)
            follow_up = chat + [ChatMessage("assistant", first.text), ChatMessage("user", "And another one?")]
            second = _ask(engine, follow_up, warm)
            read_by_the_reply = first.prompt_tokens + first.completion_tokens - 1  # the last token is only sampled
            answers[warm] = second.text
            if not warm:
                assert second.cached_prompt_tokens <= read_by_the_reply
                continue
            render = lambda msgs: engine._render_tokens(msgs, lambda event: None, threading.Event())[0]  # noqa: E731
            closing = closing_tokens(chat, first.text, render)
            assert len(closing) > read_by_the_reply  # there was something to read ahead
            assert second.cached_prompt_tokens == len(closing)  # ... and the follow-up found all of it
            assert answers[True] == answers[False]  # greedy: the same reply as when the follow-up read them itself
    finally:
        engine.unload()
