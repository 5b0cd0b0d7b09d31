"""From an API's sampling fields to Atelier's :class:`~engines.api.TextRequest`, the same for both APIs.

A field the client left out takes Atelier's own default (the chat page's),
except ``max_tokens``: OpenAI's chat API means "until the context is full"
when it is absent, so it is the model's context length. Whatever
``TextRequest.validate`` refuses becomes a 400 with its sentence.
"""

from __future__ import annotations

from engines.api import ChatMessage, SamplingParams, TextRequest, ToolFunction
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
                 tools: tuple[ToolFunction, ...] = (), tool_choice: str = "auto",
                 param: str = "messages") -> TextRequest:
    """A chat turn; a conversation too long for the context is refused (never trimmed behind the client's back)."""
    check_last_turn(messages, param)
    return checked(TextRequest(messages, params, stop=tuple(stop or ()), json_schema=json_schema, overflow="stop",
                               tools=tuple(tools), tool_choice=tool_choice), param)


def check_last_turn(messages: tuple[ChatMessage, ...], param: str = "messages") -> None:
    """A conversation ends with the user's message, or with the results of the calls the model made (role "tool")."""
    if messages and messages[-1].tool_calls:
        raise ApiError(400, "The last message calls tools: send their results after it (the server never runs a "
                            "tool).", param=param)
    if not messages or messages[-1].role not in ("user", "tool"):
        raise ApiError(400, "The last message must come from the user.", param=param)


def completion_request(prompt: str, params: SamplingParams, *, stop=()) -> TextRequest:
    return checked(TextRequest(sampling=params, raw_prompt=prompt, stop=tuple(stop or ())), "prompt")
