"""The token loop of one reply: sample, turn tokens into text, stop, report.

It drives llama-cpp-python's token generator (``Llama.generate``: the same
prefix reuse, sampler chain and seed handling ``create_completion`` uses)
and does the text side itself, because ``create_completion``'s streaming
re-detokenizes and re-scans the whole reply at every token (quadratic in the
reply's length) and cuts stop sequences out of the last chunk by bytes.
Here each token's bytes go through one incremental UTF-8 decoder (a
character split over two tokens waits for its second half) and one
:class:`~engines.llama.stop_text.StopScanner`, so the cost per token is
constant and a stop sequence never leaks, not even in part.
"""

from __future__ import annotations

import codecs
import ctypes
import time
from dataclasses import dataclass
from typing import Callable

from engines.api import CancelFlag, Emit, SamplingParams, StatsEvent, TokenEvent
from engines.llama.stop_text import StopScanner

STATS_INTERVAL_S = 0.25


@dataclass
class Decoded:
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    completion_tokens: int
    t_first: float | None  # when the first token was sampled (the prompt was read)
    t_last: float | None


@dataclass(frozen=True)
class DecodePlan:
    """What one reply may do: how many tokens, which stop texts, which grammar."""

    prompt_tokens: list[int]
    sampling: SamplingParams
    seed: int
    max_tokens: int
    stops: tuple[str, ...] = ()
    grammar: object | None = None  # a llama_cpp LlamaGrammar


def decode(llm, plan: DecodePlan, emit: Emit, cancel: CancelFlag, *, t_start: float, n_ctx: int,
           on_first_token: Callable[[], None] = lambda: None) -> Decoded:
    """Generate one reply, streaming TokenEvents and StatsEvents; returns what was generated."""
    import llama_cpp

    sampling = plan.sampling
    vocab = llm._model.vocab
    pieces = _PieceReader(vocab)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    scanner = StopScanner(plan.stops)
    parts: list[str] = []
    sampled = 0
    finish = "length"
    t_first = t_last = None
    last_stats = 0.0
    prompt_size = len(plan.prompt_tokens)

    def show(text: str) -> None:
        if text:
            parts.append(text)
            emit(TokenEvent(text))

    llm.set_seed(plan.seed)
    tokens = llm.generate(
        plan.prompt_tokens,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        min_p=sampling.min_p,
        temp=sampling.temperature,
        repeat_penalty=sampling.repeat_penalty,
        grammar=plan.grammar,
    )
    try:
        for token in tokens:
            now = time.perf_counter()
            if t_first is None:
                t_first = now
                on_first_token()
            if cancel.is_set():
                finish = "cancelled"
                break
            sampled += 1
            t_last = now
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            show(scanner.feed(utf8.decode(pieces.read(token))))
            if scanner.stopped:
                finish = "stop"
                break
            if sampled >= plan.max_tokens:
                finish = "length"
                break
            if now - last_stats >= STATS_INTERVAL_S:
                last_stats = now
                emit(StatsEvent(prompt_size, sampled, n_ctx, ttft(t_start, t_first), rate(sampled, t_first, t_last)))
    finally:
        tokens.close()
    if cancel.is_set():
        finish = "cancelled"
    elif not scanner.stopped:
        show(scanner.feed(utf8.decode(b"", final=True)))
        show(scanner.flush())
    return Decoded("".join(parts), finish, sampled, t_first, t_last)


class _PieceReader:
    """A token's bytes, as llama.cpp spells it (no control-token text), through one reused buffer."""

    def __init__(self, vocab) -> None:
        self._vocab = vocab
        self._size = 256
        self._buffer = ctypes.create_string_buffer(self._size)

    def read(self, token: int) -> bytes:
        import llama_cpp

        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._buffer, self._size, 0, False)
        if n < 0:  # the piece is longer than the buffer: llama.cpp says how long
            self._size = -n
            self._buffer = ctypes.create_string_buffer(self._size)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, self._buffer, self._size, 0, False)
        return self._buffer.raw[:n]


def rate(tokens: int, t_first: float | None, t_last: float | None) -> float | None:
    """Decode rate: tokens after the first, over the time since the first."""
    if t_first is None or t_last is None or tokens < 2 or t_last <= t_first:
        return None
    return (tokens - 1) / (t_last - t_first)


def ttft(t_start: float, t_first: float | None) -> float | None:
    return None if t_first is None else t_first - t_start
