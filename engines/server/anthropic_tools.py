"""Anthropic's tool use, to and from :mod:`engines.server.tool_calls`.

In a request: ``tools`` (``{name, description, input_schema}``: client
tools; Anthropic's server tools, such as web search, are refused by type),
``tool_choice`` (``{"type": "auto" | "any" | "tool" | "none"}``, ``"tool"``
with the ``name`` of the one tool to call; ``disable_parallel_tool_use``);
in the conversation, ``tool_use`` blocks in assistant turns and
``tool_result`` blocks in user turns (their ``content`` a string or text
blocks; ``is_error`` marks a failed call, which the model reads as
"Error: ...", as in the chat).

In a reply: a ``text`` block when the model wrote text, then one
``tool_use`` block per call (``{"id": "toolu_...", "name", "input"}``), and
``stop_reason: "tool_use"``; streamed, each call is a
``content_block_start`` with the block (its ``input`` empty), one
``input_json_delta`` with the arguments' JSON, and a ``content_block_stop``.
"""

from __future__ import annotations

import secrets

from engines.api import ChatMessage, ToolCallRequest
from engines.server.errors import ApiError
from engines.server.openai_schema import Body
from engines.server.tool_calls import ToolOffer, checked_tools, tool_offer

_CHOICE_TYPES = {"auto": "auto", "any": "required", "tool": "required", "none": "none"}


class AnthropicTool(Body):
    name: str
    description: str | None = None
    input_schema: dict | None = None  # required of a client tool; server tools (``type``) have none
    type: str | None = None  # "custom" (or absent) for a client tool; a server tool's versioned type otherwise


def offer_of(tools: list[AnthropicTool] | None, tool_choice: dict | None) -> ToolOffer | None:
    """The request's tools and tool choice, checked; None when it offers none and requires nothing."""
    tools = tools or []
    for index, tool in enumerate(tools):
        if tool.type not in (None, "custom"):
            raise ApiError(400, f"'tools[{index}]' is a server tool of type '{tool.type[:64]}', which Atelier does not "
                                "have; only client tools (name, description, input_schema) can be offered.",
                           param=f"tools[{index}].type")
        if tool.input_schema is None:
            raise ApiError(400, f"Missing required parameter: 'tools[{index}].input_schema'.",
                           param=f"tools[{index}].input_schema")
    checked = checked_tools([(t.name, t.description, t.input_schema) for t in tools],
                            [f"tools[{i}]" for i in range(len(tools))], "input_schema")
    choice, only, parallel = _choice(tool_choice)
    if not checked and choice != "required":
        return None
    return tool_offer(checked, choice, only, parallel, "tool_choice")


def _choice(value: dict | None) -> tuple[str, str | None, bool]:
    if value is None:
        return "auto", None, True
    kind = value.get("type")
    if kind not in _CHOICE_TYPES:
        raise ApiError(400, "'tool_choice.type' must be 'auto', 'any', 'tool' or 'none'.", param="tool_choice.type")
    name = value.get("name")
    if kind == "tool" and not isinstance(name, str):
        raise ApiError(400, "'tool_choice.name' is missing: a tool_choice of type 'tool' names the tool to call.",
                       param="tool_choice.name")
    return _CHOICE_TYPES[kind], name if kind == "tool" else None, not value.get("disable_parallel_tool_use", False)


def tool_blocks(content, where: str, role: str) -> tuple[object, tuple[ToolCallRequest, ...], list[tuple[ChatMessage, str]]]:
    """A turn's content split: its other blocks (or its text), its calls (``tool_use``) and its results.

    The results come as ``(tool message, where its tool_use_id is)``, in order; a template shows them
    before the turn's own text, as Anthropic's API requires them to come first.
    """
    if isinstance(content, str):
        return content, (), []
    rest, calls, results = [], [], []
    for index, block in enumerate(content):
        kind, at = block.get("type"), f"{where}.{index}"
        if kind == "tool_use" and role == "assistant":
            calls.append(_call(block, at))
        elif kind == "tool_result" and role == "user":
            results.append(_result(block, at))
        else:
            rest.append(block)
    return rest, tuple(calls), results


def _call(block: dict, where: str) -> ToolCallRequest:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str):
        raise ApiError(400, f"'{where}' is a tool_use block without its 'id' and 'name'.", param=where)
    if not isinstance(arguments, dict):
        raise ApiError(400, f"'{where}.input' must be an object of arguments.", param=f"{where}.input")
    return ToolCallRequest(call_id, name, arguments)


def _result(block: dict, where: str) -> tuple[ChatMessage, str]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise ApiError(400, f"'{where}.tool_use_id' is missing: a tool_result answers one tool_use, by its id.",
                       param=f"{where}.tool_use_id")
    content = block.get("content", "")
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(400, f"'{where}.content.{index}' is a block of type '{kind}'; a tool_result can hold "
                                    "text only.", param=f"{where}.content")
            texts.append(part["text"])
        content = "\n".join(texts)
    elif not isinstance(content, str):
        raise ApiError(400, f"'{where}.content' must be text or a list of text blocks.", param=f"{where}.content")
    if block.get("is_error"):
        content = f"Error: {content}"
    return ChatMessage("tool", content, tool_call_id=call_id), f"{where}.tool_use_id"


def tool_use_blocks(calls: list[dict]) -> list[dict]:
    """The calls as ``tool_use`` content blocks, each with a fresh id."""
    return [{"type": "tool_use", "id": f"toolu_{secrets.token_hex(12)}", "name": str(call.get("name", "")),
             "input": call.get("arguments", {})} for call in calls]
