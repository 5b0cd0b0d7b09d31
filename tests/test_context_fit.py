"""Fitting a conversation into the context: stop with a message, or drop the oldest turns."""

import pytest

from engines.api import ChatMessage
from engines.errors import EngineError, ErrorKind
from engines.llama.context_fit import fit_conversation, reply_reserve


def words(messages) -> int:
    return sum(len(m.content.split()) + 4 for m in messages)


def convo(turns: int) -> list[ChatMessage]:
    messages = [ChatMessage("system", "be brief")]
    for i in range(turns):
        messages.append(ChatMessage("user", f"question {i} " + "word " * 20))
        messages.append(ChatMessage("assistant", f"answer {i} " + "word " * 20))
    messages.append(ChatMessage("user", "the last question"))
    return messages


def test_fits_untouched():
    fitted = fit_conversation(convo(1), words, context_length=1000, max_tokens=100, policy="stop")
    assert fitted.dropped == 0 and len(fitted.messages) == 4


def test_stop_policy_raises_a_clear_message():
    with pytest.raises(EngineError) as info:
        fit_conversation(convo(10), words, context_length=200, max_tokens=40, policy="stop")
    assert info.value.kind == ErrorKind.CONTEXT_OVERFLOW
    assert "context holds 200" in info.value.message


def test_drop_oldest_keeps_system_and_last_user_and_drops_whole_exchanges():
    fitted = fit_conversation(convo(10), words, context_length=200, max_tokens=40, policy="drop_oldest")
    assert fitted.dropped > 0 and fitted.dropped % 2 == 0
    assert fitted.messages[0] == ChatMessage("system", "be brief")
    assert fitted.messages[-1].content == "the last question"
    assert fitted.prompt_tokens <= 200 - reply_reserve(40, 200)
    # what remains is the newest exchanges, in order
    kept = [m.content.split()[1] for m in fitted.messages[1:-1]]
    assert kept == sorted(kept, key=int)


def test_a_single_message_too_long_cannot_be_fixed_by_dropping():
    messages = [ChatMessage("user", "word " * 500)]
    with pytest.raises(EngineError) as info:
        fit_conversation(messages, words, context_length=200, max_tokens=40, policy="drop_oldest")
    assert "Your message alone" in info.value.message


def test_reply_reserve_is_capped_at_a_quarter_of_the_context():
    assert reply_reserve(4096, 2048) == 512
    assert reply_reserve(100, 2048) == 100
