"""From an API's sampling fields to Atelier's :class:`~engines.api.TextRequest`, the same for both APIs.

A field the client left out takes Atelier's own default (the chat page's),
except ``max_tokens``: OpenAI's chat API means "until the context is full"
when it is absent, so it is the model's context length. Whatever
``TextRequest.validate`` refuses becomes a 400 with its sentence.
"""

from __future__ import annotations

from engines.api import ChatMessage, SamplingParams, TextRequest
from engines.errors import problems_sentence
from engines.server.errors import ApiError

_DEFAULTS = SamplingParams()


def sampling(*, max_tokens: int, temperature=None, top_p=None, top_k=None, min_p=None, repeat_penalty=None,
             seed=None) -> SamplingParams:
    def given(value, default):
        return default if value is None else value

    return SamplingParams(
        temperature=given(temperature, _DEFAULTS.temperature),
        top_p=given(top_p, _DEFAULTS.top_p),
        top_k=given(top_k, _DEFAULTS.top_k),
        min_p=given(min_p, _DEFAULTS.min_p),
        repeat_penalty=given(repeat_penalty, _DEFAULTS.repeat_penalty),
        max_tokens=max_tokens,
        seed=seed,
    )


def checked(request: TextRequest, param: str = "messages") -> TextRequest:
    problems = request.validate()
    if problems:
        raise ApiError(400, problems_sentence(problems), param=param)
    return request


def chat_request(messages: tuple[ChatMessage, ...], params: SamplingParams, *, stop=(), json_schema=None,
                 param: str = "messages") -> TextRequest:
    """A chat turn; a conversation too long for the context is refused (never trimmed behind the client's back)."""
    if not messages or messages[-1].role != "user":
        raise ApiError(400, "The last message must come from the user.", param=param)
    return checked(TextRequest(messages, params, stop=tuple(stop or ()), json_schema=json_schema, overflow="stop"),
                   param)


def completion_request(prompt: str, params: SamplingParams, *, stop=()) -> TextRequest:
    return checked(TextRequest(sampling=params, raw_prompt=prompt, stop=tuple(stop or ())), "prompt")
