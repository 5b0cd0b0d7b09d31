"""Reading tool calls in a model's own syntax: Hermes/Qwen, Llama 3.1 JSON and Mistral.

A model whose chat template defines tools (``ModelInfo.tool_format``, found
by :mod:`engines.llama.tool_templates`) answers either in plain text or
with calls in its family's syntax:

- ``hermes`` (Qwen 2.5, Hermes 2/3): ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``,
  one block per call, after any text;
- ``llama3``: the whole reply is ``{"name": ..., "parameters": {...}}``, maybe after
  ``<|python_tag|>``; several calls are separated by ``;``;
- ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``. Its marker is a control
  token, which the engine does not print, so a reply that starts with ``[{"name"`` is a call too.

:func:`parse_reply` gives the text and the calls (name and arguments, only
ever *parsed* as JSON; the loop validates them against the tool's schema
before anything runs). A call that cannot be read raises
:class:`MalformedCall` with one line for the user; the loop shows it and the
chat goes on. :func:`visible_text` is what may be streamed while the reply
is written: never a call's syntax.
"""

from __future__ import annotations

import json
import re

NAMES = {"hermes": "Hermes", "llama3": "Llama 3.1 JSON", "mistral": "Mistral"}
_HERMES_OPEN, _HERMES_CLOSE = "<tool_call>", "</tool_call>"
_PYTHON_TAG = "<|python_tag|>"
_MISTRAL_TAG = "[TOOL_CALLS]"


class MalformedCall(ValueError):
    """The model started a tool call that does not parse; ``text`` is what it wrote before it."""

    def __init__(self, message: str, text: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.text = text


def mode_name(family: str | None) -> str:
    """How the UI names the mode: "Tool calls in the model's own tool format (Hermes)"."""
    return f"Tool calls in the model's own tool format ({NAMES[family]})" if family in NAMES else ""


def parse_reply(family: str, text: str) -> tuple[str, list[dict]]:
    """(the text for the user, [{"name", "arguments"}, ...]); MalformedCall when a call does not parse."""
    if family == "hermes":
        return _parse_hermes(text)
    if family == "llama3":
        return _parse_llama3(text)
    if family == "mistral":
        return _parse_mistral(text)
    raise ValueError(f"unknown tool format {family!r}")


def visible_text(family: str, text: str) -> str:
    """The part of a reply being written that is surely text for the user (no call, no start of one)."""
    if family == "hermes":
        at = text.find(_HERMES_OPEN)
        shown = text if at < 0 else text[:at]
        return shown[:len(shown) - _partial_suffix(shown, _HERMES_OPEN)]
    start = text.lstrip()
    if not start:
        return ""
    if family == "llama3" and (start.startswith("{") or _PYTHON_TAG.startswith(start[:len(_PYTHON_TAG)])):
        return ""
    if family == "mistral" and (start.startswith("[") or _MISTRAL_TAG.startswith(start[:len(_MISTRAL_TAG)])):
        return ""
    return text


def _partial_suffix(text: str, marker: str) -> int:
    """How many characters at the end of ``text`` could be the start of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def _call(data: object, key: str, family: str, text: str) -> dict:
    """One call object as {"name", "arguments"}; MalformedCall when it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise MalformedCall(f"The model wrote a tool call without a tool name ({NAMES[family]} format); "
                            "it was not run.", text)
    arguments = data.get(key, data.get("arguments", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            raise MalformedCall(f"The model's call of '{data['name'][:64]}' has arguments that are not JSON "
                                f"({NAMES[family]} format); it was not run.", text) from None
    return {"name": data["name"], "arguments": arguments}


def _unreadable(family: str, text: str, exc: ValueError) -> MalformedCall:
    reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
    return MalformedCall(f"The model wrote a tool call that is not valid JSON ({NAMES[family]} format: {reason}); "
                         "it was not run.", text)


def _parse_hermes(text: str) -> tuple[str, list[dict]]:
    at = text.find(_HERMES_OPEN)
    if at < 0:
        return text, []
    before = text[:at].rstrip()
    calls = []
    for block in re.finditer(re.escape(_HERMES_OPEN) + r"(.*?)(?:" + re.escape(_HERMES_CLOSE) + r"|$)", text[at:],
                             flags=re.S):
        body = block.group(1).strip()
        if not body:
            continue
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise _unreadable("hermes", before, exc) from None
        calls.append(_call(data, "arguments", "hermes", before))
    if not calls:
        raise MalformedCall("The model opened a tool call and wrote nothing in it (Hermes format); nothing was run.",
                            before)
    return before, calls


def _parse_llama3(text: str) -> tuple[str, list[dict]]:
    body = text.strip()
    tagged = body.startswith(_PYTHON_TAG)
    if tagged:
        body = body[len(_PYTHON_TAG):].strip()
    if not body.startswith("{"):
        if tagged:
            raise MalformedCall("The model started a tool call (<|python_tag|>) that is not a JSON object "
                                "(Llama 3.1 JSON format); it was not run.")
        return text, []
    decoder, calls, pos = json.JSONDecoder(), [], 0
    while pos < len(body):
        try:
            data, end = decoder.raw_decode(body, pos)
        except ValueError as exc:
            if not calls and not tagged and not re.match(r'\{\s*"name"', body):
                return text, []  # a reply that happens to start with a brace: text, not a call
            raise _unreadable("llama3", "", exc) from None
        if not calls and not tagged and not (isinstance(data, dict) and "name" in data
                                             and ("parameters" in data or "arguments" in data)):
            return text, []  # a JSON answer, not a call
        calls.append(_call(data, "parameters", "llama3", ""))
        pos = end
        while pos < len(body) and body[pos] in " \t\r\n;":
            pos += 1
    return "", calls


def _parse_mistral(text: str) -> tuple[str, list[dict]]:
    body = text.strip()
    tagged = body.startswith(_MISTRAL_TAG)
    if tagged:
        body = body[len(_MISTRAL_TAG):].strip()
    elif not re.match(r'\[\s*\{\s*"name"', body):
        return text, []
    try:
        data, end = json.JSONDecoder().raw_decode(body)
    except ValueError as exc:
        raise _unreadable("mistral", "", exc) from None
    if not isinstance(data, list) or not data:
        raise MalformedCall("The model's [TOOL_CALLS] is not a list of calls (Mistral format); nothing was run.")
    return "", [_call(item, "arguments", "mistral", "") for item in data]
