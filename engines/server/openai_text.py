"""``POST /v1/chat/completions`` and ``POST /v1/completions``, streamed (SSE) and not.

The shapes follow OpenAI's API reference, as its official client reads
them: a streamed reply is ``chat.completion.chunk`` objects, the first one
with the role, then one per token (tokens already waiting share one),
then one with ``finish_reason``, then, with ``stream_options.include_usage``,
one with ``usage`` and no choices, and finally ``data: [DONE]``. Failures before the first token (the model
cannot load, the prompt is longer than the context) are a proper HTTP
status; a failure after it is an ``error`` event, which the client raises.

With ``tools`` (:mod:`engines.server.openai_tools`), the reply is read as it
streams (:class:`~engines.server.tool_calls.ReplyReader`): only text a client
may see goes out as it comes, never a call's syntax, and the calls follow as
``tool_calls`` deltas, before the chunk with ``finish_reason: "tool_calls"``.
"""

from __future__ import annotations

import secrets
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from engines.api import ChatMessage, FinishedEvent, SamplingParams, TokenEvent
from engines.errors import EngineError, ErrorKind
from engines.server.errors import ApiError, from_engine_error
from engines.server.image_parts import image_of
from engines.server.openai_schema import ChatCompletionBody, CompletionBody
from engines.server.openai_tools import (
    assistant_calls,
    call_deltas,
    offer_of,
    refuse_function_role,
    tool_result,
    with_ids,
)
from engines.server.runner import client_id, finished_result, first_output
from engines.server.streams import SSE_HEADERS, SseTemplate, cancel_on_disconnect, sse
from engines.server.text_requests import chat_request, check_last_turn, completion_request, sampling
from engines.server.tool_calls import ReplyReader, linked_results, model_tool_format, refuse_with_schema, request_parts

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionBody, request: Request):
    _refuse_unsupported(body.n, body.logprobs)
    offer = offer_of(body)
    messages = _messages(body)
    check_last_turn(messages)  # before the model is looked up: a bad request never loads one
    json_schema = _json_schema(body)
    if offer is not None:
        refuse_with_schema(offer, json_schema is not None, "response_format")
    context = request.app.state.context
    served = await context.find(body.model, "chat")
    family = None
    if offer is not None and offer.offered:
        family = await model_tool_format(request, served, client_id(request, body.user))
    # No max_tokens: up to the context's end, as OpenAI does; a remote model's context is its server's (a
    # RemoteSpec has none), so it gets the usual reply budget rather than a number the server might refuse.
    budget = getattr(served.spec, "context_length", None) or SamplingParams().max_tokens
    params = sampling(max_tokens=body.max_completion_tokens or body.max_tokens or budget,
                      temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
                      repeat_penalty=body.repeat_penalty, seed=body.seed)
    text_request = chat_request(params=params, stop=body.stop, **request_parts(offer, messages, family, json_schema))
    param = "response_format" if json_schema is not None else "messages"
    reply = _Reply("chatcmpl", served.id, chat=True, reader=ReplyReader.for_offer(offer, family))
    return await _answer(request, context, served, text_request, body.stream, _include_usage(body), body.user,
                         reply, param)


@router.post("/v1/completions")
async def completions(body: CompletionBody, request: Request):
    _refuse_unsupported(body.n, body.logprobs)
    if len(body.prompt) != 1:
        raise ApiError(400, f"Send one prompt per request, not {len(body.prompt)}.", param="prompt")
    if body.echo or body.suffix:
        raise ApiError(400, "'echo' and 'suffix' are not supported.", param="echo" if body.echo else "suffix")
    context = request.app.state.context
    served = await context.find(body.model, "chat")
    params = sampling(max_tokens=body.max_tokens or 16, temperature=body.temperature, top_p=body.top_p,
                      top_k=body.top_k, min_p=body.min_p, repeat_penalty=body.repeat_penalty, seed=body.seed)
    text_request = completion_request(body.prompt[0], params, stop=body.stop)
    reply = _Reply("cmpl", served.id, chat=False)
    return await _answer(request, context, served, text_request, body.stream, _include_usage(body), body.user,
                         reply, "prompt")


async def _answer(request: Request, context, served, text_request, stream: bool, include_usage: bool,
                  user: str | None, reply: "_Reply", param: str):
    tickets = await context.start(served, text_request, client_id(request, user), request.state.log_entry)
    async with cancel_on_disconnect(request.receive, tickets):
        if not stream:
            result = await finished_result(tickets, param)
            return JSONResponse(reply.whole(result))
        first = await first_output(tickets, param)

    async def chunks():
        try:
            if reply.chat:
                yield sse(reply.chunk({"role": "assistant", "content": ""}, None, include_usage))
            out = _event_bytes(first, reply, include_usage)
            if out:
                yield out
            while events := await tickets.batch():
                out = _event_bytes(events, reply, include_usage)
                if out:
                    yield out
            result = tickets.result
            if result is not None and result.finish_reason == "cancelled":
                yield sse(from_engine_error(EngineError(ErrorKind.CANCELLED, "The generation was cancelled.")).body(""))
            elif include_usage and result is not None:
                yield sse(reply.usage_chunk(result))
        except EngineError as exc:
            yield sse(from_engine_error(exc, param).body(""))
        yield sse("[DONE]")

    # The task runs when the response ends, also when the client went away before the stream began;
    # after a finished generation it does nothing.
    return StreamingResponse(chunks(), media_type="text/event-stream", headers=SSE_HEADERS,
                             background=BackgroundTask(tickets.cancel))


def _event_bytes(events, reply: "_Reply", include_usage: bool) -> bytes:
    """The chunks of events that came together, as one write: the texts of consecutive tokens in one chunk.

    A token that comes alone is sent alone, at once; only tokens already
    waiting (the client or the loop was slower than the model) share a
    chunk, which is still an ordinary chunk whose text is theirs in order.
    """
    out, texts = [], []
    reader = reply.reader
    for event in events:
        if isinstance(event, TokenEvent):
            text = reader.feed(event.text) if reader is not None and event.text else event.text
            if text:
                texts.append(text)
            continue
        if isinstance(event, FinishedEvent) and event.result.finish_reason != "cancelled":
            finish_reason = event.result.finish_reason
            if reader is not None:
                read = reader.end(event.result.text)
                if read.rest:
                    texts.append(read.rest)
                if texts:
                    out.append(reply.text_chunk("".join(texts), include_usage))
                    texts = []
                out += [sse(reply.chunk(delta, None, include_usage)) for delta in call_deltas(read.calls)]
                finish_reason = "tool_calls" if read.calls else finish_reason
            elif texts:
                out.append(reply.text_chunk("".join(texts), include_usage))
                texts = []
            out.append(sse(reply.chunk({} if reply.chat else "", finish_reason, include_usage)))
            continue
        if texts:
            out.append(reply.text_chunk("".join(texts), include_usage))
            texts = []
    if texts:
        out.append(reply.text_chunk("".join(texts), include_usage))
    return b"".join(out)


class _Reply:
    """Builds the JSON of one reply, chat or completion, whole or in chunks, with one id and time."""

    def __init__(self, prefix: str, model: str, *, chat: bool, reader: ReplyReader | None = None) -> None:
        self.id = f"{prefix}-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.model = model
        self.chat = chat
        self.reader = reader if reader is not None and reader.mode != "plain" else None  # tools were offered
        self._text_templates: dict[bool, SseTemplate] = {}

    def _head(self, object_: str) -> dict:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model,
                "system_fingerprint": None}

    def whole(self, result) -> dict:
        if self.chat:
            message = {"role": "assistant", "content": result.text, "refusal": None}
            finish_reason = result.finish_reason
            if self.reader is not None:
                self.reader.feed(result.text)
                read = self.reader.end(result.text)
                message["content"] = read.content
                if read.calls:
                    message["content"] = read.content or None
                    message["tool_calls"] = with_ids(read.calls)
                    finish_reason = "tool_calls"
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            data = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}
            data = self._head("text_completion")
        return {**data, "choices": [choice], "usage": _usage(result)}

    def chunk(self, delta, finish_reason: str | None, include_usage: bool) -> dict:
        if self.chat:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            data = self._head("chat.completion.chunk")
        else:
            choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish_reason}
            data = self._head("text_completion")
        data["choices"] = [choice]
        if include_usage:
            data["usage"] = None
        return data

    def text_chunk(self, text: str, include_usage: bool) -> bytes:
        """The SSE bytes of ``chunk`` with ``text`` as the delta, made from a template (one per token: cheap)."""
        template = self._text_templates.get(include_usage)
        if template is None:
            mark = SseTemplate.marker()
            data = self.chunk({"content": mark} if self.chat else mark, None, include_usage)
            template = self._text_templates[include_usage] = SseTemplate(data)
        return template.event(text)

    def usage_chunk(self, result) -> dict:
        data = self._head("chat.completion.chunk" if self.chat else "text_completion")
        return {**data, "choices": [], "usage": _usage(result)}


def _usage(result) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


def _messages(body: ChatCompletionBody) -> tuple[ChatMessage, ...]:
    messages = []
    for index, message in enumerate(body.messages):
        where = f"messages[{index}]"
        if message.role == "function":
            raise refuse_function_role(where)
        role = "system" if message.role == "developer" else message.role
        calls = assistant_calls(message, where) if role == "assistant" else ()
        content = "" if calls and message.content is None else message.content
        text, images = _content_of(content, f"{where}.content", role)
        if role == "tool":
            messages.append(tool_result(message, text, where))
        else:
            messages.append(ChatMessage(role, text, tool_calls=calls, images=images))
    return linked_results(messages, [f"messages[{index}].tool_call_id" for index in range(len(messages))])


def _content_of(content, param: str, role: str) -> tuple[str, tuple[bytes, ...]]:
    """A message's text (a string, or its text parts joined) and, in a user message, its images (image_url parts)."""
    if content is None:
        raise ApiError(400, f"'{param}' is missing; every message needs text content.", param=param)
    if isinstance(content, str):
        return content, ()
    texts, images = [], []
    for index, part in enumerate(content):
        kind = part.get("type")
        if kind == "image_url" and role == "user":
            images.append(image_of(part, f"{param}[{index}]"))
            continue
        if kind != "text" or not isinstance(part.get("text"), str):
            raise ApiError(400, f"'{param}' has a part of type '{kind}'; only text parts (and image_url parts in "
                                "user messages) are supported.", param=param)
        texts.append(part["text"])
    return "\n".join(texts), tuple(images)


def _json_schema(body: ChatCompletionBody) -> dict | None:
    format_ = body.response_format
    if format_ is None or format_.type == "text":
        return None
    if format_.type == "json_object":
        return {"type": "object"}
    if format_.json_schema is None:
        raise ApiError(400, "response_format of type 'json_schema' needs a 'json_schema' object with a 'schema'.",
                       param="response_format")
    return format_.json_schema.schema_


def _include_usage(body) -> bool:
    return bool(body.stream and body.stream_options and body.stream_options.include_usage)


def _refuse_unsupported(n: int, logprobs) -> None:
    if n != 1:
        raise ApiError(400, f"n must be 1: Atelier generates one choice per request (got {n}).", param="n")
    if logprobs:
        raise ApiError(400, "logprobs are not supported.", param="logprobs")
