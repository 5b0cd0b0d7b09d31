"""The engine interface: plain requests, results and events.

Everything here is a plain dataclass that msgspec encodes field by field, so
it crosses to the engine-host process unchanged, and without pickle
(:mod:`engines.host.payloads` lists the types the host protocol carries).
An engine never sees the GUI: it gets a
request, an ``emit`` callback for events and a cancel flag, and returns a
result that records the exact parameters that produced it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Literal, Protocol, Union, runtime_checkable

from engines.kv_cache import DEFAULT_CACHE_TYPE, cache_type_problem

Role = Literal["system", "user", "assistant", "tool"]
OverflowPolicy = Literal["stop", "drop_oldest"]
MAX_STOP_SEQUENCES = 16  # OpenAI allows 4; llama.cpp's server has no limit. 16 keeps the per-token scan cheap.
MAX_IMAGES_PER_REQUEST = 16  # images a conversation may hold in one request; each costs hundreds of tokens


@dataclass(frozen=True)
class ToolFunction:
    """A tool the model may call, as chat templates render it (OpenAI's ``function``: name, description, schema)."""

    name: str
    description: str
    parameters: dict  # the JSON schema of the arguments


@dataclass(frozen=True)
class ToolCallRequest:
    """A call the model made: ``arguments`` as it wrote them, already parsed (never executed) by engines.tools."""

    id: str
    name: str
    arguments: dict


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    # An assistant message that called tools (its content is what it wrote before the calls), and a
    # "tool" message with one call's result (``tool_call_id`` and ``name`` say which). The model's own
    # template renders them in its tool-call form; engines.tools flattens them for a template without one.
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    # Images attached to a user message (the encoded PNG/JPEG/WebP bytes, in order) for a vision model:
    # one loaded with its projector (TextLoadSpec.projector), which reads them through llama.cpp's mtmd.
    images: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings, with defaults that suit most instruction models."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    max_tokens: int = 1024
    seed: int | None = None  # None: a fresh random seed, reported in the result

    def validate(self) -> list[str]:
        """Human-readable problems, empty when the settings are usable."""
        problems = []
        if not 0.0 <= self.temperature <= 5.0:
            problems.append("temperature must be between 0 and 5")
        if not 0.0 < self.top_p <= 1.0:
            problems.append("top-p must be above 0 and at most 1")
        if self.top_k < 0:
            problems.append("top-k must be 0 (off) or more")
        if not 0.0 <= self.min_p <= 1.0:
            problems.append("min-p must be between 0 and 1")
        if not 0.5 <= self.repeat_penalty <= 3.0:
            problems.append("repeat penalty must be between 0.5 and 3")
        if self.max_tokens < 1:
            problems.append("max tokens must be at least 1")
        if self.seed is not None and not 0 <= self.seed < 2**32:
            problems.append("seed must be between 0 and 4294967295")
        return problems


@dataclass(frozen=True)
class TextLoadSpec:
    """How to load a text model. ``None`` means: let the engine choose."""

    model_path: str
    context_length: int = 4096
    threads: int | None = None  # default: physical cores
    gpu_layers: int | None = None  # default: all layers when the build can offload, else 0
    cache_type: str = DEFAULT_CACHE_TYPE  # the context (KV) cache: "f16", "q8_0" or "q4_0" (engines/kv_cache.py)
    # llama.cpp's embedding mode: the model answers EmbeddingRequest, not TextRequest.
    # Part of the spec (and so of the scheduler's key) because it changes how the context is built.
    embedding: bool = False
    # The vision projector (a GGUF "mmproj" file) that lets the model read images; None: text only.
    projector: str | None = None

    def validate(self) -> list[str]:
        """Human-readable problems, empty when the spec is usable."""
        problems = []
        if self.context_length < 64:
            problems.append("the context length must be at least 64 tokens")
        cache_problem = cache_type_problem(self.cache_type)
        if cache_problem:
            problems.append(cache_problem)
        if self.projector is not None and self.embedding:
            problems.append("an embedding model cannot be loaded with a vision projector")
        return problems


@dataclass(frozen=True)
class TextRequest:
    """A chat turn (``messages``) or, with ``raw_prompt``, a plain completion."""

    messages: tuple[ChatMessage, ...] = ()
    sampling: SamplingParams = field(default_factory=SamplingParams)
    raw_prompt: str | None = None
    overflow: OverflowPolicy = "stop"
    # Extra stop strings (OpenAI semantics): the reply ends before the first one, which is not
    # part of the text, and finish_reason is "stop". The template's own end markers always apply.
    stop: tuple[str, ...] = ()
    # A JSON schema the reply must follow, enforced token by token by a llama.cpp grammar.
    # A schema llama.cpp cannot turn into a grammar is EngineError BAD_INPUT with its reason.
    json_schema: dict | None = None
    # A hint naming the conversation (a chat id, a server client's key). The prompt cache finds
    # a conversation's saved state by longest token prefix without it; with it, it looks there first.
    cache_key: str | None = None
    # Tools the model may call, rendered by its chat template where the template defines tools
    # (ModelInfo.tools_in_template); engines.tools runs the calls, the engine only renders them.
    tools: tuple[ToolFunction, ...] = ()
    # "required": the reply must call one of ``tools``, in the template's own syntax, under a grammar;
    # "auto": it may (parsed afterwards, never executed); "none": the tools are not offered.
    tool_choice: Literal["auto", "required", "none"] = "auto"

    def validate(self) -> list[str]:
        problems = list(self.sampling.validate())
        if any(not isinstance(s, str) or not s for s in self.stop):
            problems.append("each stop sequence must be non-empty text")
        if len(self.stop) > MAX_STOP_SEQUENCES:
            problems.append(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            problems.append("the JSON schema must be a JSON object")
        if self.raw_prompt is not None:
            if not self.raw_prompt.strip():
                problems.append("the prompt is empty")
        else:
            users = [m for m in self.messages if m.role == "user"]
            if not users or not (users[-1].content.strip() or users[-1].images):
                problems.append("the prompt is empty")
        if len({tool.name for tool in self.tools}) != len(self.tools):
            problems.append("two tools have the same name")
        if self.tool_choice not in ("auto", "required", "none"):
            problems.append("the tool choice must be auto, required or none")
        elif self.tool_choice == "required" and not self.tools:
            problems.append("a reply that must call a tool needs tools")
        if self.tools and self.json_schema is not None:
            problems.append("a reply that may call tools cannot also follow a JSON schema")
        images = [image for m in self.messages for image in m.images]
        if any(m.images and m.role != "user" for m in self.messages):
            problems.append("only user messages can carry images")
        if any(not isinstance(image, bytes) or not image for image in images):
            problems.append("an attached image is empty")
        if len(images) > MAX_IMAGES_PER_REQUEST:
            problems.append(f"at most {MAX_IMAGES_PER_REQUEST} images fit in one conversation")
        if images and self.raw_prompt is not None:
            problems.append("a raw prompt cannot carry images; send them in a message")
        return problems


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model turned out to be."""

    path: str
    architecture: str
    name: str
    context_length: int  # the context actually allocated
    trained_context_length: int
    threads: int
    gpu_layers: int
    template: str  # name of the chat format in use
    template_source: str  # "gguf" (the file's own) or "fallback" (picked by architecture)
    gpu_offload_supported: bool
    cache_type: str = DEFAULT_CACHE_TYPE  # the context cache's element type
    flash_attention: bool = False  # on whenever the cache is quantized: llama.cpp needs it for a quantized V cache
    kv_cache_bytes: int | None = None  # the cache size llama.cpp reported, when it did
    embedding: bool = False  # loaded in embedding mode: it answers EmbeddingRequest only
    tools_in_template: bool = False  # the chat template renders tool definitions (else engines.tools' fallback)
    tool_format: str | None = None  # its tool-call family ("hermes", "llama3", "mistral"), when tools_in_template
    vision: bool = False  # loaded with a projector: its user messages may carry images


@dataclass(frozen=True)
class TextResult:
    text: str
    finish_reason: Literal["stop", "length", "cancelled"]
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float | None
    tokens_per_second: float | None  # decode rate, first token excluded
    context_length: int
    template: str
    seed: int
    dropped_messages: int = 0
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # Prompt tokens llama.cpp did not read again: the live context or a saved conversation state
    # held them (OpenAI's usage.prompt_tokens_details.cached_tokens).
    cached_prompt_tokens: int = 0
    # Prompt tokens that are images (counted in prompt_tokens): what the vision projector made of them.
    image_tokens: int = 0

    @property
    def context_used(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict:
        data = asdict(self)
        data["context_used"] = self.context_used
        return data


@dataclass(frozen=True)
class EmbeddingRequest:
    """Texts to embed with a model loaded in embedding mode (``TextLoadSpec(embedding=True)``)."""

    texts: tuple[str, ...]
    normalize: bool = True  # unit length (L2), so that a dot product is the cosine similarity

    def validate(self) -> list[str]:
        problems = []
        if not self.texts:
            problems.append("there is no text to embed")
        elif any(not isinstance(t, str) or not t.strip() for t in self.texts):
            problems.append("every text to embed must be non-empty")
        return problems


@dataclass(frozen=True)
class EmbeddingResult:
    """One vector per text, in the request's order, and the tokens they took (usage)."""

    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int
    model: str  # the model's name, as in ModelInfo.name

    @property
    def dimensions(self) -> int:
        return len(self.vectors[0]) if self.vectors else 0

    def to_dict(self) -> dict:
        return asdict(self)


# ---- events -------------------------------------------------------------


@dataclass(frozen=True)
class TokenEvent:
    text: str


@dataclass(frozen=True)
class ProgressEvent:
    stage: str  # "load", "prompt", "step"...
    message: str
    fraction: float | None = None


@dataclass(frozen=True)
class NoticeEvent:
    """Something the user should see, such as dropped turns."""

    message: str


@dataclass(frozen=True)
class StatsEvent:
    """Live figures while a reply streams."""

    prompt_tokens: int
    completion_tokens: int
    context_length: int
    time_to_first_token_s: float | None
    tokens_per_second: float | None


@dataclass(frozen=True)
class FinishedEvent:
    result: Union[TextResult, EmbeddingResult]


@dataclass(frozen=True)
class ErrorEvent:
    kind: str
    message: str


EngineEvent = Union[TokenEvent, ProgressEvent, NoticeEvent, StatsEvent, FinishedEvent, ErrorEvent]
Emit = Callable[[EngineEvent], None]


@runtime_checkable
class CancelFlag(Protocol):
    """A flag the engine polls at every token or step (threading or multiprocessing Event)."""

    def is_set(self) -> bool: ...
