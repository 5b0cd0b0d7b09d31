"""Fitting a conversation into the context window.

When the rendered prompt plus room for the reply is longer than the
context, the user chooses: stop with a clear message, or drop the oldest
turns (never the system prompt, never the newest user message) and show a
notice saying how many were dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from engines.api import ChatMessage, OverflowPolicy
from engines.errors import EngineError, ErrorKind


@dataclass(frozen=True)
class FittedPrompt:
    messages: tuple[ChatMessage, ...]
    prompt_tokens: int
    dropped: int


def reply_reserve(max_tokens: int, context_length: int) -> int:
    """Room kept free for the reply: the requested maximum, capped at a quarter of the context."""
    return max(1, min(max_tokens, context_length // 4))


def fit_conversation(
    messages: Sequence[ChatMessage],
    count_tokens: Callable[[Sequence[ChatMessage]], int],
    context_length: int,
    max_tokens: int,
    policy: OverflowPolicy,
) -> FittedPrompt:
    """Return the messages that fit, or raise EngineError(CONTEXT_OVERFLOW)."""
    budget = context_length - reply_reserve(max_tokens, context_length)
    current = list(messages)
    used = count_tokens(current)
    if used <= budget:
        return FittedPrompt(tuple(current), used, 0)
    if policy != "drop_oldest":
        raise EngineError(
            ErrorKind.CONTEXT_OVERFLOW,
            f"The conversation is {used:,} tokens, but the context holds {context_length:,} "
            f"and {context_length - budget:,} are kept for the reply. Drop the oldest turns, "
            "start a new chat, or load the model with a longer context.",
        )
    dropped = 0
    while used > budget:
        index = _oldest_droppable(current)
        if index is None:
            raise EngineError(
                ErrorKind.CONTEXT_OVERFLOW,
                f"Your message alone is {used:,} tokens with the system prompt, more than the "
                f"{budget:,} that fit in a context of {context_length:,}. Shorten it, or load the "
                "model with a longer context.",
            )
        # Drop a whole exchange: the user turn and the assistant reply after it.
        del current[index]
        dropped += 1
        if index < len(current) - 1 and current[index].role == "assistant":
            del current[index]
            dropped += 1
        used = count_tokens(current)
    return FittedPrompt(tuple(current), used, dropped)


def _oldest_droppable(messages: list[ChatMessage]) -> int | None:
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    for i, message in enumerate(messages):
        if message.role != "system" and i != last_user:
            return i
    return None
