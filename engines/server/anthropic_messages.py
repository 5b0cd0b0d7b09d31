"""``POST /v1/messages``: Anthropic's Messages API, streamed (its named SSE events) and not.

Coding agents speak this API. The request is a system prompt (text, or a
list of text blocks) and alternating user and assistant messages; the
reply is one text block, or, with ``tools`` (:mod:`engines.server.anthropic_tools`),
the text (if any) and one ``tool_use`` block per call. Streamed, the events come in Anthropic's order:
``message_start``, ``content_block_start``, ``ping``, one
``content_block_delta`` per token (tokens already waiting share one),
``content_block_stop``, ``message_delta`` (stop reason and output tokens)
and ``message_stop``; a failure after the start is an ``error`` event. Errors are Anthropic's
``{"type": "error", "error": {...}}`` (:mod:`engines.server.errors`).
"""

from __future__ import annotations

import secrets
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field
from starlette.background import BackgroundTask

from engines.api import ChatMessage, FinishedEvent, StatsEvent, TokenEvent
from engines.errors import EngineError, ErrorKind
from engines.server.anthropic_tools import AnthropicTool, offer_of, tool_blocks, tool_use_blocks
from engines.server.errors import ApiError, from_engine_error
from engines.server.image_parts import anthropic_image_of
from engines.server.openai_schema import Body, StopList
from engines.server.runner import client_id, finished_result, first_output
from engines.server.streams import SSE_HEADERS, SseTemplate, cancel_on_disconnect, sse
from engines.server.text_requests import chat_request, check_last_turn, sampling
from engines.server.tool_calls import ReplyReader, arguments_json, linked_results, model_tool_format, request_parts

router = APIRouter()
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


class AnthropicMessage(Body):
    role: Literal["user", "assistant"]
    content: str | list[dict]


class MessagesBody(Body):
    model: str
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[dict] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop_sequences: StopList | None = None
    stream: bool = False
    tools: list[AnthropicTool] | None = None
    tool_choice: dict | None = None
    metadata: dict | None = None


@router.post("/v1/messages")
async def messages(body: MessagesBody, request: Request):
    offer = offer_of(body.tools, body.tool_choice)
    chat = _conversation(body)
    check_last_turn(chat)  # before the model is looked up: a bad request never loads one
    context = request.app.state.context
    served = await context.find(body.model, "chat")
    params = sampling(max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k)
    user = (body.metadata or {}).get("user_id")
    client = client_id(request, user if isinstance(user, str) else None)
    family = await model_tool_format(request, served, client) if offer and offer.offered else None
    text_request = chat_request(params=params, stop=body.stop_sequences, **request_parts(offer, chat, family))
    reader = ReplyReader.for_offer(offer, family)
    tickets = await context.start(served, text_request, client, request.state.log_entry)
    message_id = f"msg_{secrets.token_hex(12)}"
    async with cancel_on_disconnect(request.receive, tickets):
        if not body.stream:
            result = await finished_result(tickets, "messages")
            reader.feed(result.text)
            read = reader.end(result.text)
            calls = tool_use_blocks(read.calls)
            content = ([{"type": "text", "text": read.content}] if read.content or not calls else []) + calls
            return JSONResponse(_message(message_id, served.id, content, _stop_reason(result, calls),
                                         result.prompt_tokens, result.completion_tokens))
        first = await first_output(tickets, "messages")

    async def events():
        prompt_tokens = next((e.prompt_tokens if isinstance(e, StatsEvent) else e.result.prompt_tokens
                              for e in reversed(first) if isinstance(e, (StatsEvent, FinishedEvent))), 0)
        start = _message(message_id, served.id, [], None, prompt_tokens, 0)
        yield sse({"type": "message_start", "message": start}, "message_start")
        # Without tools the text block opens at once; with them, when there is text (a reply may be only calls).
        text_open = reader.mode == "plain"
        if text_open:
            yield _TEXT_START
        yield sse({"type": "ping"}, "ping")
        delta = SseTemplate({"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": SseTemplate.marker()}}, "content_block_delta")
        try:
            events = first
            while events:
                # Tokens that came together go out as one delta: their text, in order (see openai_text).
                text = "".join(reader.feed(e.text) for e in events if isinstance(e, TokenEvent) and e.text)
                if text:
                    if not text_open:
                        yield _TEXT_START
                        text_open = True
                    yield delta.event(text)
                events = await tickets.batch()
            result = tickets.result
            if result is None or result.finish_reason == "cancelled":
                raise EngineError(ErrorKind.CANCELLED, "The generation was cancelled.")
        except EngineError as exc:
            yield sse(from_engine_error(exc, "messages").body(request.url.path), "error")
            return
        read = reader.end(result.text)
        calls = tool_use_blocks(read.calls)
        if not text_open and (read.rest or not calls):
            yield _TEXT_START
            text_open = True
        if read.rest:
            yield delta.event(read.rest)
        if text_open:
            yield sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        for index, call in enumerate(calls, start=1 if text_open else 0):
            yield sse({"type": "content_block_start", "index": index, "content_block": {**call, "input": {}}},
                      "content_block_start")
            yield sse({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": arguments_json(call["input"])}},
                      "content_block_delta")
            yield sse({"type": "content_block_stop", "index": index}, "content_block_stop")
        yield sse({"type": "message_delta",
                   "delta": {"stop_reason": _stop_reason(result, calls), "stop_sequence": None},
                   "usage": {"input_tokens": result.prompt_tokens, "output_tokens": result.completion_tokens}},
                  "message_delta")
        yield sse({"type": "message_stop"}, "message_stop")

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS,
                             background=BackgroundTask(tickets.cancel))


_TEXT_START = sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                  "content_block_start")


def _stop_reason(result, calls: list) -> str:
    return "tool_use" if calls else _STOP_REASONS.get(result.finish_reason, "end_turn")


def _conversation(body: MessagesBody) -> tuple[ChatMessage, ...]:
    """The system prompt and the turns; a user turn's tool results become tool messages before its own text."""
    chat = [ChatMessage("system", _text_of(body.system, "system"))] if body.system else []
    where_ids = [""] * len(chat)  # where each message names the call it answers (tool messages only)
    for i, m in enumerate(body.messages):
        where = f"messages.{i}.content"
        rest, calls, results = tool_blocks(m.content, where, m.role)
        for result, at in results:
            chat.append(result)
            where_ids.append(at)
        if calls or rest or not results:
            text, images = _content_of(rest, where, m.role)
            chat.append(ChatMessage(m.role, text, tool_calls=calls, images=images))
            where_ids.append("")
    return linked_results(chat, where_ids)


def _message(message_id: str, model: str, content: list, stop_reason: str | None, input_tokens: int,
             output_tokens: int) -> dict:
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}


def _text_of(content, param: str) -> str:
    """Text, or a list of ``{"type": "text", "text": ...}`` blocks joined; other blocks are refused by name."""
    return _content_of(content, param, "system")[0]


def _content_of(content, param: str, role: str) -> tuple[str, tuple[bytes, ...]]:
    """The text of ``content`` and, in a user turn, its images (base64 ``image`` blocks, for a vision model)."""
    if isinstance(content, str):
        return content, ()
    texts, images = [], []
    for index, block in enumerate(content):
        kind = block.get("type")
        if kind == "image" and role == "user":
            images.append(anthropic_image_of(block, f"{param}.{index}"))
            continue
        if kind != "text" or not isinstance(block.get("text"), str):
            raise ApiError(400, f"{param}: blocks of type '{kind}' are not supported; send text"
                                f"{' (and images in user turns)' if role == 'user' else ''}.", param=param)
        texts.append(block["text"])
    return "\n".join(texts), tuple(images)
