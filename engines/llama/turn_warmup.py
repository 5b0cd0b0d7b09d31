"""Read the tokens that close a reply and open the user's next turn while the user is still reading.

A follow-up in a long chat is answered from the live context (the prompt
cache), so its time to first token is llama.cpp reading the new tokens at
the end of a long context, several milliseconds each on a small CPU. Some
of those tokens are known the moment a reply ends, whatever the user types
next: the reply's last sampled token (sampled, never read back), the
template's end-of-turn markers, and the markers that open the next user
turn (Gemma: ``<end_of_turn>\\n<start_of_turn>user\\n``, six of the
seventeen tokens a short follow-up adds). :func:`closing_tokens` finds
them without knowing the template's syntax: it renders the conversation
with the reply and two different next user messages, and keeps the tokens
the two renderings share. Reading them right after the reply costs the
same few milliseconds, spent while nobody waits, and the next request
finds them in the live context.

It only reads tokens the next turn will send in this conversation: a
request of another conversation, or an edited history, finds its own
prefix as before (the prompt cache cuts the live context back or restores
a saved state).
"""

from __future__ import annotations

from typing import Callable, Sequence

from engines.api import ChatMessage
from engines.llama.context_state import common_prefix

MAX_WARM_TOKENS = 32  # more than any template's turn markers; beyond this the reply was re-tokenized differently
# Two next user messages that share no first character: what the renderings share cannot hold their text.
_PROBES = ("A", "Z")

RenderTokens = Callable[[Sequence[ChatMessage]], list[int]]


def closing_tokens(messages: Sequence[ChatMessage], reply: str, render: RenderTokens) -> list[int]:
    """The tokens every next user turn of this conversation starts with (the reply included)."""
    history = list(messages) + [ChatMessage("assistant", reply)]
    first = render(history + [ChatMessage("user", _PROBES[0])])
    second = render(history + [ChatMessage("user", _PROBES[1])])
    return list(first[:common_prefix(first, second)])


def tokens_to_read(closing: list[int], live_tokens: int) -> int:
    """How many of *closing* are worth reading now, given that the context holds its first *live_tokens*."""
    missing = len(closing) - live_tokens
    return missing if 0 < missing <= MAX_WARM_TOKENS else 0
