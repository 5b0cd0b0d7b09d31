"""``POST /v1/messages``: Anthropic's Messages API, streamed (its named SSE events) and not.

Coding agents speak this API. The request is a system prompt (text, or a
list of text blocks) and alternating user and assistant messages; the
reply is one text block. Streamed, the events come in Anthropic's order:
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
from engines.server.errors import ApiError, from_engine_error
from engines.server.image_parts import anthropic_image_of
from engines.server.openai_schema import Body, StopList
from engines.server.runner import client_id, finished_result, first_output
from engines.server.streams import SSE_HEADERS, SseTemplate, cancel_on_disconnect, sse
from engines.server.text_requests import chat_request, sampling

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
    tools: list | None = None
    metadata: dict | None = None


@router.post("/v1/messages")
async def messages(body: MessagesBody, request: Request):
    if body.tools:
        raise ApiError(400, "tools: tool use is not supported yet.", param="tools")
    chat = ([ChatMessage("system", _text_of(body.system, "system"))] if body.system else [])
    for i, m in enumerate(body.messages):
        text, images = _content_of(m.content, f"messages.{i}.content", m.role)
        chat.append(ChatMessage(m.role, text, images=images))
    context = request.app.state.context
    served = await context.find(body.model, "chat")
    params = sampling(max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k)
    text_request = chat_request(tuple(chat), params, stop=body.stop_sequences)
    user = (body.metadata or {}).get("user_id")
    tickets = await context.start(served, text_request, client_id(request, user if isinstance(user, str) else None),
                                  request.state.log_entry)
    message_id = f"msg_{secrets.token_hex(12)}"
    async with cancel_on_disconnect(request.receive, tickets):
        if not body.stream:
            result = await finished_result(tickets, "messages")
            return JSONResponse(_message(message_id, served.id, [{"type": "text", "text": result.text}],
                                         _STOP_REASONS.get(result.finish_reason, "end_turn"),
                                         result.prompt_tokens, result.completion_tokens))
        first = await first_output(tickets, "messages")

    async def events():
        prompt_tokens = next((e.prompt_tokens if isinstance(e, StatsEvent) else e.result.prompt_tokens
                              for e in reversed(first) if isinstance(e, (StatsEvent, FinishedEvent))), 0)
        start = _message(message_id, served.id, [], None, prompt_tokens, 0)
        yield sse({"type": "message_start", "message": start}, "message_start")
        yield sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                  "content_block_start")
        yield sse({"type": "ping"}, "ping")
        delta = SseTemplate({"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": SseTemplate.marker()}}, "content_block_delta")
        try:
            events = first
            while events:
                # Tokens that came together go out as one delta: their text, in order (see openai_text).
                text = "".join(e.text for e in events if isinstance(e, TokenEvent) and e.text)
                if text:
                    yield delta.event(text)
                events = await tickets.batch()
            result = tickets.result
            if result is None or result.finish_reason == "cancelled":
                raise EngineError(ErrorKind.CANCELLED, "The generation was cancelled.")
        except EngineError as exc:
            yield sse(from_engine_error(exc, "messages").body(request.url.path), "error")
            return
        yield sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        yield sse({"type": "message_delta",
                   "delta": {"stop_reason": _STOP_REASONS.get(result.finish_reason, "end_turn"), "stop_sequence": None},
                   "usage": {"input_tokens": result.prompt_tokens, "output_tokens": result.completion_tokens}},
                  "message_delta")
        yield sse({"type": "message_stop"}, "message_stop")

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS,
                             background=BackgroundTask(tickets.cancel))


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
