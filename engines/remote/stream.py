"""One streamed reply from an OpenAI-compatible server, as Atelier's engine events.

The server sends Server-Sent Events: ``data: {chunk}`` lines, then
``data: [DONE]``. Each chunk's ``choices[0].delta.content`` (chat) or
``choices[0].text`` (a plain completion) becomes a :class:`TokenEvent`;
``finish_reason`` and, when the server sends it (``stream_options.
include_usage``), ``usage`` end up in the :class:`TextResult`. Time to the
first token and the decode rate are measured here, as the llama.cpp
engine measures them, so the chat shows the same figures for both.

Anything else is garbage and is said so: a chunk that is not JSON, not a
chunk, or an ``error`` object sent in the middle of the stream (vLLM and
llama-server do that when generation fails after the headers went out).
A stream that ends without ``[DONE]`` or a ``finish_reason`` was cut: the
caller reports it, and ChatTurn keeps the partial text.
"""

from __future__ import annotations

import json
import time

from engines.api import EngineEvent, SamplingParams, StatsEvent, TextResult, TokenEvent
from engines.errors import EngineError, ErrorKind
from engines.remote.http import one_line, server_reason

STATS_INTERVAL_S = 0.25  # as the llama.cpp engine: often enough for the status line, rarely enough for Qt
TEMPLATE = "the server's"  # the server applies its own chat template


class ReplyStream:
    """Feed it each event's data; it returns the events to emit and, at the end, the result."""

    def __init__(self, name: str, *, context_length: int, seed: int, sampling: SamplingParams,
                 chat: bool = True, dropped_messages: int = 0) -> None:
        self.name = name
        self.context_length = context_length
        self.seed = seed
        self.sampling = sampling
        self.chat = chat
        self.dropped_messages = dropped_messages
        self.parts: list[str] = []
        self.pieces = 0  # content chunks: about one token each on llama.cpp and vLLM
        self.finish_reason: str | None = None
        self.done = False
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.t_start = time.perf_counter()
        self.t_first: float | None = None
        self.t_last: float | None = None
        self._last_stats = 0.0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def ended(self) -> bool:
        """Whether the server said the reply is complete ([DONE], or a finish reason)."""
        return self.done or self.finish_reason is not None

    def feed(self, data: str) -> list[EngineEvent]:
        if self.done:
            return []
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError:
            raise self.garbage(f"a line that is not JSON ({one_line(data, 60)})") from None
        if not isinstance(chunk, dict):
            raise self.garbage("JSON that is not a reply chunk")
        if "error" in chunk:
            reason, _code = server_reason(json.dumps(chunk).encode())
            raise EngineError(ErrorKind.NETWORK, f"The remote server '{self.name}' stopped the reply with an error"
                              f"{': ' + reason if reason else ''}.")
        self._usage(chunk.get("usage"))
        choices = chunk.get("choices")
        if choices is None or choices == []:
            return []  # the usage-only chunk at the end, or a keep-alive
        if not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise self.garbage("a chunk whose \"choices\" is not a list of objects")
        choice = choices[0]
        piece = self._piece(choice)
        events: list[EngineEvent] = []
        now = time.perf_counter()
        if piece:
            if self.t_first is None:
                self.t_first = now
            self.t_last = now
            self.parts.append(piece)
            self.pieces += 1
            events.append(TokenEvent(piece))
            if now - self._last_stats >= STATS_INTERVAL_S:
                self._last_stats = now
                events.append(self.stats())
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self.finish_reason = reason
        return events

    def _piece(self, choice: dict) -> str:
        if self.chat:
            delta = choice.get("delta")
            if delta is None:
                return ""
            if not isinstance(delta, dict):
                raise self.garbage("a chunk whose \"delta\" is not an object")
            content = delta.get("content")
        else:
            content = choice.get("text")
        if content is None:
            return ""
        if not isinstance(content, str):
            raise self.garbage("a chunk whose text is not a string")
        return content

    def _usage(self, usage) -> None:
        if not isinstance(usage, dict):
            return
        for key in ("prompt_tokens", "completion_tokens"):
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(self, key, value)

    def garbage(self, what: str) -> EngineError:
        kept = "; the text so far is kept" if self.parts else ""
        return EngineError(ErrorKind.NETWORK, f"The remote server '{self.name}' sent {what} instead of an "
                           f"OpenAI-compatible reply{kept}.")

    # ---- figures ---------------------------------------------------------

    def _completion(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.pieces

    def _rate(self) -> float | None:
        tokens = self._completion()
        if self.t_first is None or self.t_last is None or tokens < 2 or self.t_last <= self.t_first:
            return None
        return (tokens - 1) / (self.t_last - self.t_first)

    def _ttft(self) -> float | None:
        return None if self.t_first is None else self.t_first - self.t_start

    def stats(self) -> StatsEvent:
        return StatsEvent(self.prompt_tokens or 0, self._completion(), self.context_length, self._ttft(), self._rate())

    def result(self, cancelled: bool = False) -> TextResult:
        if cancelled:
            finish = "cancelled"
        else:
            finish = "length" if self.finish_reason == "length" else "stop"
        return TextResult(
            text=self.text, finish_reason=finish, prompt_tokens=self.prompt_tokens or 0,
            completion_tokens=self._completion(), time_to_first_token_s=self._ttft(),
            tokens_per_second=self._rate(), context_length=self.context_length, template=TEMPLATE,
            seed=self.seed, dropped_messages=self.dropped_messages, sampling=self.sampling,
        )
