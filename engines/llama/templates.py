"""Choosing and rendering the chat template.

The model's own template (GGUF ``tokenizer.chat_template``) comes first. It
is rendered in Jinja's immutable sandbox with a time and size budget
(:mod:`engines.llama.template_sandbox`), so a hostile template can neither
reach Python nor hang the load. When a file has no template, or one that
fails to render or goes over its budget, a known format is picked from the
architecture and the vocabulary, its name is shown to the user, and
:attr:`ChatTemplate.note` says why.

A rendered prompt also says which of its characters came from the messages
(:attr:`RenderedPrompt.segments`), so that only the template's own markup
can ever become control tokens (:mod:`engines.llama.prompt_tokens`).

This module imports ``llama_cpp`` lazily: only the engine host calls it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from engines.api import ChatMessage, ToolFunction
from engines.llama.message_spans import find_message_spans
from engines.llama.template_sandbox import (
    RenderBudget,
    SandboxedChatTemplate,
    TemplateBudgetError,
    TemplateCancelled,
)
from engines.llama.tool_templates import detect_tool_format, flatten_tool_turns, messages_payload, tools_payload

log = logging.getLogger(__name__)

# Phi-3's format, missing from llama-cpp-python's named formats.
PHI3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# Formats that silently drop a system message: we fold it into the first user turn.
_FOLDS_SYSTEM = {"gemma", "mistral-instruct"}


@dataclass(frozen=True)
class RenderedPrompt:
    prompt: str
    stop: tuple[str, ...]
    added_special: bool  # the text already carries BOS, so tokenize without adding it
    # The prompt cut into (text, from_a_message) pieces, in order; None when the template
    # changes message text in a way that cannot be traced back (then see prompt_tokens).
    segments: tuple[tuple[str, bool], ...] | None = None
    messages: tuple[str, ...] = field(default=(), repr=False)  # the message texts as rendered


@dataclass
class ChatTemplate:
    """A way to turn messages into a prompt, with a name the user can read.

    ``note`` says why a fallback is in use when the file's own template was
    refused ("the model's chat template took too long to render; using the
    gemma format"); None otherwise.
    """

    name: str
    source: str  # "gguf" or "fallback"
    _formatter: Callable[..., Any]
    note: str | None = None
    # The template's own tool-call family ("hermes", "llama3", "mistral"; engines.llama.tool_templates),
    # None when it has none Atelier reads (then engines.tools' JSON fallback runs, and tools are never given).
    tool_format: str | None = None

    def render(self, messages: Sequence[ChatMessage], cancel: Any = None, tools: Sequence[ToolFunction] = (),
               has_control_text: Callable[[str], bool] | None = None) -> RenderedPrompt:
        """Render ``messages`` (and ``tools``, cleaned); raises TemplateBudgetError / TemplateCancelled for a file's template."""
        if self.tool_format is not None:
            payload = messages_payload(messages, self.tool_format, has_control_text)
            tool_list = tools_payload(tools, has_control_text) if tools else None
        else:  # earlier calls and results (the chat used tools before) as plain turns
            payload = [{"role": m.role, "content": m.content} for m in flatten_tool_turns(messages)]
            tool_list = None
        if self.name in _FOLDS_SYSTEM:
            payload = fold_system_into_first_user(payload)
        budget = RenderBudget.for_text(sum(len(m["content"]) for m in payload), cancel)
        try:
            prompt, stop, added_special = self._format(payload, budget, tool_list)
        except (TemplateBudgetError, TemplateCancelled):
            raise
        except Exception:
            if not any(m["role"] == "system" for m in payload):
                raise
            # Some templates reject a system role outright: fold it in and retry.
            payload = fold_system_into_first_user(payload)
            prompt, stop, added_special = self._format(payload, budget, tool_list)
        contents = [m["content"] for m in payload]
        spans = find_message_spans(prompt, payload, lambda marked: self._format(marked, budget, tool_list)[0])
        segments = None
        if spans is not None:
            segments, pos = [], 0
            for start, end in spans:
                if start > pos:
                    segments.append((prompt[pos:start], False))
                segments.append((prompt[start:end], True))
                pos = end
            if pos < len(prompt):
                segments.append((prompt[pos:], False))
            segments = tuple(segments)
        return RenderedPrompt(
            prompt=prompt,
            stop=tuple(s for s in stop if s),
            added_special=added_special,
            segments=segments,
            messages=tuple(contents),
        )

    def _format(self, payload: list[dict], budget: RenderBudget,
                tools: list[dict] | None = None) -> tuple[str, tuple[str, ...], bool]:
        if isinstance(self._formatter, SandboxedChatTemplate):
            return self._formatter.render(payload, budget, tools), (self._formatter.eos_token,), True
        response = self._formatter(messages=payload)
        stop = response.stop or []
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        return response.prompt, stop, bool(getattr(response, "added_special", False))

    @property
    def label(self) -> str:
        origin = "from the model file" if self.source == "gguf" else "picked by architecture: the file has no usable template"
        return f"{self.name} ({origin})"


def fold_system_into_first_user(messages: list[dict]) -> list[dict]:
    """Prepend the system prompt to the first user message, as Gemma's own template does."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"])
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system:
        for message in rest:
            if message["role"] == "user":
                message["content"] = f"{system}\n\n{message['content']}"
                break
    return rest


def fallback_format_name(architecture: str | None, tokens: Sequence[str] | None) -> str:
    """A known chat format for a file without a usable template."""
    arch = (architecture or "").lower()
    vocab = set(tokens or ())
    if arch.startswith("gemma"):
        return "gemma"
    if arch.startswith("phi3") or "<|assistant|>" in vocab and "<|end|>" in vocab:
        return "phi-3"
    if "<|eot_id|>" in vocab and "<|start_header_id|>" in vocab:
        return "llama-3"
    if "<|im_start|>" in vocab or arch.startswith(("qwen", "internlm", "olmo")):
        return "chatml"
    if arch.startswith("mistral") or "[INST]" in vocab:
        return "mistral-instruct"
    if arch == "llama":
        return "llama-2"
    return "chatml"


def _named_formatter(name: str):
    from llama_cpp import llama_chat_format as fmt

    if name == "phi-3":
        return SandboxedChatTemplate(PHI3_TEMPLATE, eos_token="<|end|>", bos_token="<s>")
    table = {
        "gemma": fmt.format_gemma,
        "llama-3": fmt.format_llama3,
        "llama-2": fmt.format_llama2,
        "chatml": fmt.format_chatml,
        "mistral-instruct": fmt.format_mistral_instruct,
    }
    return table[name]


_PROBE = [
    ChatMessage("system", "You are helpful."),
    ChatMessage("user", "Hi"),
    ChatMessage("assistant", "Hello!"),
    ChatMessage("user", "How are you?"),
]


def choose_template(metadata: dict, architecture: str | None, tokens: Sequence[str] | None,
                    cancel: Any = None) -> ChatTemplate:
    """The file's own template when it renders within its budget, else a fallback by architecture.

    Raises :class:`TemplateCancelled` when ``cancel`` is set while the
    template compiles or renders.
    """
    from llama_cpp import llama_chat_format as fmt

    source = metadata.get("tokenizer.chat_template")
    why = None
    if isinstance(source, str) and source.strip():
        try:
            budget = RenderBudget(cancel=cancel)
            formatter = SandboxedChatTemplate(
                source,
                eos_token=_token(tokens, metadata.get("tokenizer.ggml.eos_token_id")),
                bos_token=_token(tokens, metadata.get("tokenizer.ggml.bos_token_id")),
                budget=budget,
            )
            name = fmt.guess_chat_format_from_gguf_metadata({"tokenizer.chat_template": source}) or "model's own"
            template = ChatTemplate(name, "gguf", formatter)
            template.render(_PROBE, cancel)
            try:
                template.tool_format = detect_tool_format(
                    lambda messages, tools: formatter.render(messages, RenderBudget(cancel=cancel), tools), source)
            except TemplateBudgetError:  # it chats within budget, only not with tools: chat, through the fallback
                template.tool_format = None
            return template
        except TemplateCancelled:
            raise
        except TemplateBudgetError as exc:
            why = f"the model's chat template {exc.reason}"
        except Exception as exc:  # noqa: BLE001 - a broken template: fall back, and say so
            why = f"the model's chat template does not render ({type(exc).__name__}: {str(exc)[:200]})"
    return fallback_template(architecture, tokens, why)


def fallback_template(architecture: str | None, tokens: Sequence[str] | None, why: str | None = None) -> ChatTemplate:
    """The known format for this architecture; ``why`` (if any) is why the file's own was refused."""
    name = fallback_format_name(architecture, tokens)
    note = f"{why}; using the {name} format" if why else None
    if note:
        log.warning("%s", note)
    return ChatTemplate(name, "fallback", _named_formatter(name), note)


def _token(tokens: Sequence[str] | None, index: Any) -> str:
    """The text of token ``index``; llama.cpp's metadata gives ids as strings ("2")."""
    if isinstance(index, str) and index.strip().isdigit():
        index = int(index)
    if tokens is None or not isinstance(index, int) or not 0 <= index < len(tokens):
        return ""
    return tokens[index]
