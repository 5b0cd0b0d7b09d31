"""Tool calls for a model whose chat template has none: a JSON format enforced by a llama.cpp grammar.

Most small and base models (the demo Gemma 3 270M among them) have no
tool-call syntax of their own. For them every step of the tool loop asks
for one JSON object, and the reply is constrained token by token to the
schema below (``TextRequest.json_schema``: the one grammar path the engine
already has), so the model can only write one of:

* ``{"tool_calls": [{"name": "convert_time", "arguments": {...}}, ...]}``:
  each item is one of the offered tools, its arguments shaped by that
  tool's own schema, so even a model that never saw this format writes a
  call that parses (the arguments are still validated with jsonschema
  before anything runs);
* ``{"reply": "..."}``: the answer for the user.

The tools and the format are described in a system message. Earlier calls
and results are sent back as plain turns (what the model wrote, then
"Result of convert_time: ..."), since such templates have no tool role.
The UI names this mode: :data:`FALLBACK_NAME`.
"""

from __future__ import annotations

import json
import re
from typing import Sequence

from engines.api import ChatMessage, ToolFunction

FALLBACK_NAME = "Tool calls through a JSON grammar (this model's template has no tool format)"
MAX_CALLS_PER_STEP = 4  # calls one model step may make at once


def describe_tools(tools: Sequence[ToolFunction]) -> str:
    """The system message that tells the model which tools exist and how to call them."""
    lines = ["You can call tools. Answer with one JSON object: either",
             '{"tool_calls": [{"name": TOOL, "arguments": {...}}]} to call tools, or',
             '{"reply": "your answer"} to answer the user.',
             "After a call you get its result; then answer or call again. The tools:"]
    for tool in tools:
        lines.append(f"- {tool.name}: {tool.description.strip() or 'no description'}; arguments: "
                     f"{json.dumps(tool.parameters or {'type': 'object'}, ensure_ascii=False)}")
    return "\n".join(lines)


def step_schema(tools: Sequence[ToolFunction], choice: str = "auto", most: int = MAX_CALLS_PER_STEP) -> dict:
    """The JSON schema of one model step: calls (``choice`` "required"), a reply ("none"), or either ("auto").

    ``most`` caps the calls of the step (what is left of the turn's bound).
    """
    reply = {"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"],
             "additionalProperties": False}
    if choice == "none" or not tools:
        return reply
    one_call = [{"type": "object",
                 "properties": {"name": {"const": tool.name}, "arguments": grammar_safe(tool.parameters)},
                 "required": ["name", "arguments"], "additionalProperties": False} for tool in tools]
    calls = {"type": "object",
             "properties": {"tool_calls": {"type": "array", "minItems": 1, "maxItems": max(1, min(most, MAX_CALLS_PER_STEP)),
                                           "items": one_call[0] if len(one_call) == 1 else {"anyOf": one_call}}},
             "required": ["tool_calls"], "additionalProperties": False}
    return calls if choice == "required" else {"anyOf": [calls, reply]}


def grammar_safe(schema: dict | None) -> dict:
    """A tool's argument schema in the shape a grammar can enforce (engines.llama.grammar.shape_only)."""
    from engines.llama.grammar import shape_only

    return shape_only(schema)


def parse_step(text: str) -> tuple[str | None, list[dict] | None]:
    """(reply, None) or (None, [{"name", "arguments"}, ...]) from one step's JSON; ValueError when it is neither."""
    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("reply"), str):
        return data["reply"], None
    if isinstance(data, dict) and isinstance(data.get("tool_calls"), list):
        return None, [call for call in data["tool_calls"] if isinstance(call, dict)]
    raise ValueError("neither a reply nor tool calls")


_REPLY_START = re.compile(r'^\s*\{\s*"reply"\s*:\s*"')


def partial_reply(text: str) -> str | None:
    """The reply written so far when ``text`` is a (possibly unfinished) ``{"reply": "...`` object, else None.

    Lets the reply stream as the model writes it, and keeps a reply that the token limit cut off.
    """
    match = _REPLY_START.match(text)
    if not match:
        return None
    body = text[match.end():]
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char == '"':
            break
        if char == "\\":
            if i + 1 >= len(body):
                break
            code = body[i + 1]
            if code == "u":
                if i + 6 > len(body):
                    break
                try:
                    out.append(chr(int(body[i + 2:i + 6], 16)))
                except ValueError:
                    break
                i += 6
                continue
            out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}.get(code, code))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def prepare(messages: Sequence[ChatMessage], tools: Sequence[ToolFunction]) -> tuple[ChatMessage, ...]:
    """The conversation for one fallback step: the tools described in the system message, calls and results flattened.

    Templates without a tool role (Gemma's among them) also insist that user and assistant turns
    alternate, so the results of one step's calls become one user turn.
    """
    from engines.llama.tool_templates import flatten_tool_turns

    flat = list(flatten_tool_turns(messages))
    if not tools:
        return tuple(flat)
    described = describe_tools(tools)
    if flat and flat[0].role == "system":
        flat[0] = ChatMessage("system", f"{flat[0].content.rstrip()}\n\n{described}")
    else:
        flat.insert(0, ChatMessage("system", described))
    return tuple(flat)
