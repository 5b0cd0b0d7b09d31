"""Choosing and rendering the chat template.

The model's own template (GGUF ``tokenizer.chat_template``) comes first. It
is rendered by llama-cpp-python's ``Jinja2ChatFormatter``, which uses
Jinja's immutable sandbox, so a hostile template cannot reach Python. When a
file has no template, or one that fails to render, a known format is picked
from the architecture and the vocabulary, and its name is shown to the user.

This module imports ``llama_cpp`` lazily: only the engine host calls it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from engines.api import ChatMessage

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
    stop_token_ids: frozenset[int] = frozenset()


@dataclass
class ChatTemplate:
    """A way to turn messages into a prompt, with a name the user can read."""

    name: str
    source: str  # "gguf" or "fallback"
    _formatter: Callable[..., Any]

    def render(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        payload = [{"role": m.role, "content": m.content} for m in messages]
        if self.name in _FOLDS_SYSTEM:
            payload = fold_system_into_first_user(payload)
        try:
            response = self._formatter(messages=payload)
        except Exception:
            if not any(m["role"] == "system" for m in payload):
                raise
            # Some templates reject a system role outright: fold it in and retry.
            response = self._formatter(messages=fold_system_into_first_user(payload))
        stop = response.stop or []
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        return RenderedPrompt(
            prompt=response.prompt,
            stop=tuple(s for s in stop if s),
            added_special=bool(getattr(response, "added_special", False)),
        )

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
        return fmt.Jinja2ChatFormatter(template=PHI3_TEMPLATE, eos_token="<|end|>", bos_token="<s>")
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


def choose_template(metadata: dict, architecture: str | None, tokens: Sequence[str] | None) -> ChatTemplate:
    """The file's own template when it renders, else a fallback by architecture."""
    from llama_cpp import llama_chat_format as fmt

    source = metadata.get("tokenizer.chat_template")
    if isinstance(source, str) and source.strip():
        try:
            formatter = fmt.Jinja2ChatFormatter(
                template=source,
                eos_token=_token(tokens, metadata.get("tokenizer.ggml.eos_token_id")),
                bos_token=_token(tokens, metadata.get("tokenizer.ggml.bos_token_id")),
            )
            name = fmt.guess_chat_format_from_gguf_metadata({"tokenizer.chat_template": source}) or "model's own"
            template = ChatTemplate(name, "gguf", formatter)
            template.render(_PROBE)
            return template
        except Exception as exc:  # a broken template: fall back, and say so in the log
            log.warning("the model's chat template does not render (%s); using a fallback", exc)
    name = fallback_format_name(architecture, tokens)
    return ChatTemplate(name, "fallback", _named_formatter(name))


def _token(tokens: Sequence[str] | None, index: Any) -> str:
    if tokens is None or not isinstance(index, int) or not 0 <= index < len(tokens):
        return ""
    return tokens[index]
