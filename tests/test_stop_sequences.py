"""Stop sequences with OpenAI's semantics: the stop text is never part of the reply, not even streamed in part."""

import threading

import pytest

from engines.api import ChatMessage, SamplingParams, TextRequest, TokenEvent
from engines.llama.stop_text import StopScanner


def scan(stops, pieces):
    scanner = StopScanner(stops)
    shown = [scanner.feed(piece) for piece in pieces]
    return shown, scanner


def test_a_stop_split_over_three_pieces_is_held_back_then_cut():
    shown, scanner = scan(["<|end|>"], ["Hello <|", "en", "d|> tail"])
    assert shown == ["Hello ", "", ""]
    assert scanner.stopped and scanner.flush() == ""


def test_held_text_that_was_not_a_stop_is_released_with_the_next_piece():
    shown, scanner = scan(["STOP"], ["a ST", "ory"])
    assert shown == ["a ", "STory"]
    assert not scanner.stopped


def test_held_text_at_the_end_of_the_reply_is_flushed():
    shown, scanner = scan(["\n\nUser:"], ["Fine.\n", "\n"])
    assert shown == ["Fine.", ""]
    assert scanner.flush() == "\n\n"


def test_the_earliest_of_several_stops_wins_and_nothing_after_it_is_shown():
    shown, scanner = scan(["world", "lo w"], ["hello world"])
    assert shown == ["hel"] and scanner.stopped
    assert scanner.feed("more") == "" and scanner.flush() == ""


def test_a_reply_that_starts_with_the_stop_is_empty():
    shown, scanner = scan(["###"], ["#", "##", "rest"])
    assert shown == ["", "", ""] and scanner.stopped


def test_without_stops_every_piece_passes_at_once():
    shown, scanner = scan([], ["a", "<", "b"])
    assert shown == ["a", "<", "b"] and scanner.flush() == ""


def test_an_empty_stop_string_is_refused_by_the_request():
    request = TextRequest((ChatMessage("user", "hi"),), stop=("ok", ""))
    assert request.validate() == ["each stop sequence must be non-empty text"]


# ---- the real model ---------------------------------------------------------

PROMPT = "The three primary colors are"


def raw(engine, stop=(), max_tokens=24):
    events = []
    request = TextRequest(raw_prompt=PROMPT, sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=1),
                          stop=tuple(stop))
    result = engine.generate(request, events.append, threading.Event())
    return result, [e.text for e in events if isinstance(e, TokenEvent)]


@pytest.fixture(scope="module")
def gemma_engine(gemma_path):
    pytest.importorskip("llama_cpp")
    from engines.api import TextLoadSpec
    from engines.llama.engine import LlamaCppEngine

    engine = LlamaCppEngine()
    engine.load(TextLoadSpec(str(gemma_path), context_length=512), lambda e: None)
    yield engine
    engine.unload()


@pytest.mark.slow
def test_a_stop_across_token_boundaries_on_gemma_is_cut_and_never_streamed(gemma_engine):
    free, pieces = raw(gemma_engine)
    assert free.finish_reason == "length" and "".join(pieces) == free.text
    stop = "blue and yel"
    start = free.text.index(stop)  # greedy Gemma 3 270M: " red, blue and yellow.\n\n..."
    ends, position = set(), 0
    for piece in pieces:
        position += len(piece)
        ends.add(position)
    assert any(start < end < start + len(stop) for end in ends), "the stop text must span a token boundary"

    stopped, streamed = raw(gemma_engine, stop=[stop])
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:start]
    assert "".join(streamed) == stopped.text  # not one character of the stop text was streamed
    assert stopped.completion_tokens < free.completion_tokens


@pytest.mark.slow
def test_a_stop_that_never_comes_changes_nothing(gemma_engine):
    free, _ = raw(gemma_engine, max_tokens=12)
    same, streamed = raw(gemma_engine, stop=["purple", "\n\n\n\n"], max_tokens=12)
    assert same.text == free.text and same.finish_reason == "length" and "".join(streamed) == same.text
