"""OpenAI's function calling, to and from :mod:`engines.server.tool_calls`.

In a request: ``tools`` (``{"type": "function", "function": {name,
description, parameters}}``), ``tool_choice`` ("auto", "none", "required",
or ``{"type": "function", "function": {"name": X}}``, which requires a call
of X), ``parallel_tool_calls``; in the conversation, assistant messages
with ``tool_calls`` (their ``arguments`` a JSON string) and ``tool``
messages answering one call by its ``tool_call_id``.

In a reply: ``message.tool_calls`` (``{"id": "call_...", "type":
"function", "function": {"name", "arguments": JSON string}}``), the text
before the calls as ``content`` (null when there is none), and
``finish_reason: "tool_calls"``; streamed, the text first, then one chunk
per call with its ``index``, ``id``, ``type`` and ``function``.
"""

from __future__ import annotations

import json
import secrets

from engines.api import ChatMessage, ToolCallRequest
from engines.server.errors import ApiError
from engines.server.openai_schema import ChatCompletionBody, ChatMessageIn
from engines.server.tool_calls import ToolOffer, arguments_json, checked_tools, tool_offer

_CHOICE_SHAPES = "'auto', 'required', 'none' or {\"type\": \"function\", \"function\": {\"name\": ...}}"


def offer_of(body: ChatCompletionBody) -> ToolOffer | None:
    """The request's tools and tool choice, checked; None when it offers none and requires nothing."""
    definitions = body.tools or []
    tools = checked_tools([(d.function.name, d.function.description, d.function.parameters) for d in definitions],
                          [f"tools[{i}].function" for i in range(len(definitions))], "parameters")
    choice, only = _choice(body.tool_choice)
    if not tools and choice != "required":
        return None
    return tool_offer(tools, choice, only, body.parallel_tool_calls is not False, "tool_choice")


def _choice(value) -> tuple[str, str | None]:
    if value is None:
        return "auto", None
    if isinstance(value, str):
        if value not in ("auto", "required", "none"):
            raise ApiError(400, f"'tool_choice' must be {_CHOICE_SHAPES}, not '{value[:40]}'.", param="tool_choice")
        return value, None
    function = value.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if value.get("type") != "function" or not isinstance(name, str):
        raise ApiError(400, f"'tool_choice' must be {_CHOICE_SHAPES}.", param="tool_choice")
    return "required", name


def assistant_calls(message: ChatMessageIn, where: str) -> tuple[ToolCallRequest, ...]:
    """The calls an earlier assistant message made, their arguments read from JSON (never run)."""
    calls = []
    for index, call in enumerate(message.tool_calls or ()):
        param = f"{where}.tool_calls[{index}].function.arguments"
        arguments = call.function.arguments
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                raise ApiError(400, f"'{param}' is not valid JSON ({getattr(exc, 'msg', exc)}).", param=param) from None
        if not isinstance(arguments, dict):
            raise ApiError(400, f"'{param}' must be a JSON object of arguments.", param=param)
        calls.append(ToolCallRequest(call.id, call.function.name, arguments))
    return tuple(calls)


def tool_result(message: ChatMessageIn, text: str, where: str) -> ChatMessage:
    """A ``tool`` message: one call's result (its tool's name is filled in from the call, later)."""
    if not message.tool_call_id:
        raise ApiError(400, f"'{where}.tool_call_id' is missing: a tool message answers one call, by its id.",
                       param=f"{where}.tool_call_id")
    return ChatMessage("tool", text, tool_call_id=message.tool_call_id)


def refuse_function_role(where: str) -> ApiError:
    return ApiError(400, f"'{where}' has the role 'function', OpenAI's deprecated form of a tool result; send the "
                         "role 'tool' with the 'tool_call_id' it answers.", param=f"{where}.role")


def with_ids(calls: list[dict]) -> list[dict]:
    """The calls as ``message.tool_calls``, each with a fresh id."""
    return [{"id": f"call_{secrets.token_hex(12)}", "type": "function",
             "function": {"name": str(call.get("name", "")), "arguments": arguments_json(call.get("arguments", {}))}}
            for call in calls]


def call_deltas(calls: list[dict]) -> list[dict]:
    """The streamed form: one delta per call, with its ``index``."""
    return [{"tool_calls": [{"index": index, **call}]} for index, call in enumerate(with_ids(calls))]
