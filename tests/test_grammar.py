"""Replies constrained by a JSON schema, through a llama.cpp grammar, on real llama.cpp.

The real Gemma writing a nested schema (objects, enums, arrays) for several seeds is tested end to end,
through the CLI and the engine host, in test_tools_chat_cli.py; here, the tiny model and the refusals.
"""

import json
import threading

import pytest

from engines.api import SamplingParams, TextLoadSpec, TextRequest, TokenEvent
from engines.errors import EngineError, ErrorKind

pytest.importorskip("llama_cpp")
from engines.llama.engine import LlamaCppEngine  # noqa: E402


def load(path, ctx=512):
    engine = LlamaCppEngine()
    engine.load(TextLoadSpec(str(path), context_length=ctx, threads=1), lambda e: None)  # tiny: one thread is faster
    return engine


def constrained(engine, schema, seed, *, raw_prompt=None, messages=(), max_tokens=200):
    events = []
    request = TextRequest(messages=tuple(messages), raw_prompt=raw_prompt, json_schema=schema,
                          sampling=SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed))
    result = engine.generate(request, events.append, threading.Event())
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == result.text
    return result


def refusal(engine, schema) -> EngineError:
    with pytest.raises(EngineError) as info:
        constrained(engine, schema, seed=1, raw_prompt="{")
    assert info.value.kind == ErrorKind.BAD_INPUT
    return info.value


def test_a_schema_the_converter_cannot_read_is_refused_with_its_reason(tiny_gguf):
    engine = load(tiny_gguf)
    assert refusal(engine, {"type": "frobnicate"}).message == (
        "The JSON schema cannot be used to constrain the reply: Unrecognized schema: {'type': 'frobnicate'}.")
    assert refusal(engine, {"$ref": "#/$defs/missing"}).message == (
        "The JSON schema cannot be used to constrain the reply: Error resolving ref stdin#/$defs/missing: "
        "$defs not in {'$ref': 'stdin#/$defs/missing'}.")
    remote = {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}
    assert refusal(engine, remote).message == (
        "The JSON schema cannot be used to constrain the reply: the $ref at /properties/a names another document "
        "(https://example.com/s.json), which is never fetched; put that schema under $defs.")
    engine.unload()


@pytest.mark.slow
def test_bounds_no_value_can_meet_are_refused_where_they_are(tiny_gguf):
    """The converter would silently drop these, and the reply would break the schema it was promised."""
    engine = load(tiny_gguf)
    schema = {"type": "object", "properties": {"tags": {"type": "array", "minItems": 5, "maxItems": 2}}}
    assert refusal(engine, schema).message == (
        "The JSON schema cannot be used to constrain the reply: minItems 5 is more than maxItems 2 at /properties/tags.")
    assert refusal(engine, {"type": "string", "minLength": 10, "maxLength": 5}).message == (
        "The JSON schema cannot be used to constrain the reply: minLength 10 is more than maxLength 5 at /.")
    # enum values are data, and property names are names: neither is a keyword
    constrained(engine, {"enum": [{"minItems": 3, "maxItems": 1}]}, seed=1, raw_prompt="{", max_tokens=40)
    named = {"type": "object", "properties": {"minimum": {"type": "boolean"}, "not": {"enum": [1]}},
             "required": ["minimum", "not"]}
    constrained(engine, named, seed=1, raw_prompt="{", max_tokens=40)
    engine.unload()


def test_keywords_the_grammar_would_silently_ignore_are_refused_by_name(tiny_gguf):
    """llama-cpp-python's converter drops them: Gemma wrote "year": 4 under "minimum": 1800."""
    engine = load(tiny_gguf)
    year = {"type": "object", "properties": {"year": {"type": "integer", "minimum": 1800}}}
    assert refusal(engine, year).message == (
        "The JSON schema cannot be used to constrain the reply: llama.cpp's grammar cannot enforce 'minimum' "
        "(at /properties/year); leave it out and check that rule after the reply.")
    unique = {"type": "array", "items": {"$ref": "#/$defs/tag"}, "uniqueItems": True, "$defs": {"tag": {"type": "string"}}}
    assert refusal(engine, unique).message == (
        "The JSON schema cannot be used to constrain the reply: llama.cpp's grammar cannot enforce 'uniqueItems' "
        "(at /); leave it out and check that rule after the reply.")
    code = {"type": "string", "pattern": "^[A-Z]+$", "maxLength": 3}
    assert refusal(engine, code).message == (
        "The JSON schema cannot be used to constrain the reply: llama.cpp's grammar cannot enforce 'maxLength' "
        "together with 'pattern' (at /); put the length into the pattern.")
    engine.unload()


def test_a_schema_that_is_not_an_object_is_bad_input():
    request = TextRequest(raw_prompt="x", json_schema=["not", "a", "schema"])
    assert request.validate() == ["the JSON schema must be a JSON object"]


def test_the_tiny_model_follows_a_small_schema(tiny_gguf):
    """Random weights, so only the grammar makes this JSON: proof that it is applied to every token."""
    engine = load(tiny_gguf)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
              "required": ["ok", "n"], "additionalProperties": False}
    for seed in (1, 2, 3):
        result = constrained(engine, schema, seed, raw_prompt="Answer:", max_tokens=60)
        data = json.loads(result.text)
        assert set(data) == {"ok", "n"} and isinstance(data["ok"], bool) and data["n"] in (1, 2, 3)
        assert result.finish_reason == "stop"
    engine.unload()


def test_strings_never_hold_raw_control_characters(tiny_gguf):
    """Random weights pick line breaks and tabs freely; inside a JSON string only their escapes are valid."""
    engine = load(tiny_gguf)
    schema = {"type": "object", "properties": {"note": {"type": "string", "maxLength": 40}}, "required": ["note"]}
    for seed in range(1, 9):
        result = constrained(engine, schema, seed, raw_prompt="Note:\n", max_tokens=120)
        assert isinstance(json.loads(result.text)["note"], str)
    engine.unload()


