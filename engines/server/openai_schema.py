"""The OpenAI request bodies Atelier accepts, validated by pydantic.

Fields a client may send that Atelier has no use for (``frequency_penalty``,
``logit_bias``, ``metadata``...) are ignored, as llama.cpp's server does;
fields whose meaning Atelier cannot honour (``n`` > 1, token arrays, image
URLs) are refused with a sentence rather than silently dropped. ``tools``
(functions), ``tool_choice`` and ``parallel_tool_calls`` are taken, and so
are assistant messages with ``tool_calls`` and ``tool`` messages: their
meaning is checked in :mod:`engines.server.openai_tools`. ``top_k``, ``min_p`` and ``repeat_penalty`` are accepted as
extensions, under llama.cpp's names. A wrong type becomes a 400 naming the
field (:mod:`engines.server.app`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from engines.api import MAX_STOP_SEQUENCES
from engines.diffusion.types import MAX_BATCH, MAX_SEED

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own limit per request


def _text_list(what: str, limit: int | None = None):
    """A validator for "a string or a list of strings" (OpenAI's ``stop``, ``prompt``, ``input``)."""

    def check(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            if isinstance(value, (list, tuple)) and any(isinstance(item, (int, list)) for item in value):
                raise ValueError(f"{what} must be text; token arrays are not supported")
            raise ValueError(f"{what} must be a string or a list of strings")
        if limit is not None and len(value) > limit:
            raise ValueError(f"at most {limit} {what} items are allowed, not {len(value)}")
        return tuple(value)

    return BeforeValidator(check)


StopList = Annotated[tuple[str, ...], _text_list("stop", MAX_STOP_SEQUENCES)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class StreamOptions(Body):
    include_usage: bool = False


class JsonSchemaFormat(Body):
    name: str = "response"
    schema_: dict = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class FunctionCallIn(Body):
    name: str
    arguments: str | dict = "{}"  # a JSON string, as OpenAI sends it; an object is taken too


class ToolCallIn(Body):
    """A call an assistant message made earlier (the client sends the conversation back with it)."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class FunctionDefinition(Body):
    name: str
    description: str | None = None
    parameters: dict | None = None  # a JSON schema; absent: no arguments
    strict: bool | None = None  # a required call always follows the schema's shape (a grammar); auto ones are parsed


class ToolDefinition(Body):
    type: Literal["function"]
    function: FunctionDefinition


class ChatMessageIn(Body):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict] | None = None
    tool_calls: list[ToolCallIn] | None = None  # an assistant message's calls
    tool_call_id: str | None = None  # a tool message: the call it answers
    name: str | None = None


class ChatCompletionBody(Body):
    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0.5, le=3)
    seed: Seed | None = None
    stop: StopList | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    n: int = 1
    logprobs: bool | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: str | dict | None = None  # "auto", "required", "none" or {"type": "function", "function": {"name"}}
    parallel_tool_calls: bool | None = None
    user: str | None = None


class CompletionBody(Body):
    model: str
    prompt: Annotated[tuple[str, ...], _text_list("prompt")]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for this endpoint
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0.5, le=3)
    seed: Seed | None = None
    stop: StopList | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    user: str | None = None


class EmbeddingBody(Body):
    model: str
    input: Annotated[tuple[str, ...], _text_list("input", MAX_EMBEDDING_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class ImageGenerationBody(Body):
    model: str
    prompt: str
    n: int = Field(1, ge=1, le=MAX_BATCH)
    size: str | None = None  # "WIDTHxHEIGHT"
    response_format: Literal["b64_json", "url"] | None = None
    # Extensions, as Stable Diffusion front ends name them.
    negative_prompt: str = ""
    steps: int | None = Field(None, ge=1, le=150)
    guidance_scale: float | None = Field(None, ge=0, le=30)
    sampler: str | None = None
    seed: Seed | None = None
    user: str | None = None
