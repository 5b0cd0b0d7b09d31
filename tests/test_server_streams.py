"""A ticket's events reach the event loop in order, and tokens that pile up go out as one chunk with their exact text.

The real :class:`Ticket` is fed from another thread the way the model's
thread feeds it; the routes' byte-level output is parsed back as the
official clients parse it.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from engines.api import FinishedEvent, ProgressEvent, TextResult, TokenEvent
from engines.errors import EngineError, ErrorKind
from engines.scheduler.work import Ticket, Work
from engines.server.openai_text import _event_bytes, _Reply
from engines.server.streams import TicketStream

TEXTS = ["Hel", "lo", ", ", "wörld", " 🎨", "\n\"quoted\"\\", ""]


class _Scheduler:
    """What a Ticket needs of its scheduler: somewhere to send a cancel."""

    def __init__(self) -> None:
        self.cancelled: list[Ticket] = []

    def _cancel(self, ticket) -> None:
        self.cancelled.append(ticket)


def _result(text: str, finish: str = "length") -> TextResult:
    return TextResult(text=text, finish_reason=finish, prompt_tokens=3, completion_tokens=len(TEXTS),
                      time_to_first_token_s=0.1, tokens_per_second=10.0, context_length=256, template="t", seed=1)


def _data(raw: bytes) -> list[dict]:
    lines = raw.decode("utf-8").split("\n\n")
    assert lines[-1] == ""
    assert all(line.startswith("data: ") for line in lines[:-1])
    return [json.loads(line[6:]) for line in lines[:-1]]


def _ticket() -> tuple[Ticket, _Scheduler]:
    scheduler = _Scheduler()
    return Ticket(Work("llama_cpp", "spec", "request"), "api:test", scheduler), scheduler


def test_tokens_waiting_together_become_one_chunk_with_their_exact_text():
    reply = _Reply("chatcmpl", "local/tiny", chat=True)
    events = [ProgressEvent("prompt", "Reading")] + [TokenEvent(t) for t in TEXTS] + [FinishedEvent(_result("x"))]
    chunks = _data(_event_bytes(events, reply, include_usage=True))
    assert [c["choices"][0]["delta"] for c in chunks] == [{"content": "".join(TEXTS)}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, "length"]
    assert all(c["usage"] is None and c["id"] == reply.id and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0] == {**reply.chunk({"content": "".join(TEXTS)}, None, True)}  # the template gives the same JSON


def test_a_lone_token_is_its_own_chunk_and_completions_keep_their_shape():
    reply = _Reply("cmpl", "local/tiny", chat=False)
    [chunk] = _data(_event_bytes([TokenEvent("é")], reply, include_usage=False))
    assert chunk == reply.chunk("é", None, False)
    assert "usage" not in chunk and chunk["choices"][0]["text"] == "é"
    assert _event_bytes([TokenEvent("")], reply, include_usage=False) == b""


def test_the_loop_gets_every_event_in_order_then_the_end():
    ticket, _ = _ticket()
    ended = []

    def produce():  # as the model's thread does, while the loop waits for (or reads) the events
        for text in TEXTS:
            ticket._push(TokenEvent(text))
        ticket._push(FinishedEvent(_result("".join(TEXTS))))
        ticket._finish()

    async def run():
        stream = TicketStream(ticket, lambda result, error: ended.append((result.text, error)))
        producer = threading.Thread(target=produce)
        producer.start()
        seen = []
        while events := await stream.batch():
            seen.extend(events)
        producer.join()
        return seen, stream

    seen, stream = asyncio.run(run())
    assert [e.text for e in seen if isinstance(e, TokenEvent)] == TEXTS
    assert isinstance(seen[-1], FinishedEvent)
    assert stream.result.text == "".join(TEXTS)
    assert ended == [("".join(TEXTS), None)]


def test_events_before_an_error_come_first_then_the_error_once():
    ticket, scheduler = _ticket()
    ended = []
    for text in ("a", "b"):
        ticket._push(TokenEvent(text))
    ticket._finish(EngineError(ErrorKind.INTERNAL, "llama.cpp failed while generating: boom"))

    async def run():
        stream = TicketStream(ticket, lambda result, error: ended.append(error.message))
        first = await stream.batch()
        with pytest.raises(EngineError, match="^llama.cpp failed while generating: boom$"):
            await stream.batch()
        return first, await stream.batch(), await stream.next()

    first, after, next_ = asyncio.run(run())
    assert [e.text for e in first] == ["a", "b"]
    assert after == [] and next_ is None
    assert ended == ["llama.cpp failed while generating: boom"]
    assert scheduler.cancelled == []  # it ended on its own: nothing to cancel


def test_a_bug_below_the_stream_is_an_internal_error_in_words():
    ticket, _ = _ticket()
    ticket._finish(ValueError("unexpected"))

    async def run():
        stream = TicketStream(ticket)
        with pytest.raises(EngineError) as caught:
            await stream.next()
        return caught.value

    error = asyncio.run(run())
    assert error.kind == ErrorKind.INTERNAL
    assert error.message == ("The engine failed unexpectedly (ValueError); the details are in the server log.")


def test_cancel_reaches_the_ticket_until_it_ends():
    ticket, scheduler = _ticket()

    async def run():
        stream = TicketStream(ticket)
        stream.cancel()
        ticket._push(FinishedEvent(_result("", "cancelled")))
        ticket._finish()
        assert await stream.next() is not None
        assert await stream.next() is None
        stream.cancel()  # after the end: nothing to stop

    asyncio.run(run())
    assert scheduler.cancelled == [ticket]
