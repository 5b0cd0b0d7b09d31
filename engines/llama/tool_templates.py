"""Tools in the model's own chat template: which family it speaks, and what goes into its prompt.

Qwen 2.5, Hermes, Llama 3.1+ and Mistral templates render a ``tools``
variable (OpenAI's ``{"type": "function", "function": {...}}`` list) and
tool calls and results in their own syntax. A model trained on that syntax
calls tools far more reliably in it than in Atelier's JSON fallback
(:mod:`engines.tools.fallback`), so the engine uses it wherever the file's
template has it:

- :func:`detect_tool_format` renders the template with and without a probe
  tool (the template *really* renders tools only when the probe's name shows
  up) and names the call syntax from the template's own markers:
  ``hermes`` (``<tool_call>{json}</tool_call>``: Qwen 2.5, Hermes),
  ``llama3`` (a bare ``{"name", "parameters"}`` object, ``<|python_tag|>``)
  or ``mistral`` (``[TOOL_CALLS][{...}]``, Mistral Nemo and v3). A template
  that renders tools in a syntax not listed here (Mistral's v11
  ``[TOOL_CALLS]name[ARGS]{...}`` among them) keeps the fallback: a call
  Atelier cannot read would never run.
- :func:`tools_payload` is what the template is given. Tool names and
  descriptions come from MCP servers, which are untrusted programs, and
  land in the template's own text, which is tokenized *with* control
  tokens: a description holding ``<|im_end|>`` would forge a turn. So every
  string is cleaned (:func:`clean_text`: control characters, template-like
  ``{{ }}``/``{% %}``, markup like ``<|...|>``, ``<tool_call>``, ``[INST]``
  and anything this vocabulary reads as a control token are removed) and
  capped in length.
- :func:`messages_payload` turns calls and results into what templates
  expect: calls under ``tool_calls`` (omitted when there are none: Llama's
  template tests ``'tool_calls' in message``), Mistral's nine-character
  call ids, and Llama 3.1's one call per assistant turn.
- :func:`call_grammar` is the GBNF grammar of one call in the family's
  syntax, for a step that must call a tool (tool choice "required"), as
  llama.cpp's server constrains it. Other steps are parsed afterwards
  (:mod:`engines.tools.call_formats`), never executed. llama.cpp's server
  holds those to "text or a call" with a *lazy* grammar that wakes at the
  call's trigger word; llama-cpp-python's ``Llama.generate`` only takes an
  always-on grammar, and one that allows any text would be checked against
  the whole vocabulary at every token of a plain answer (150,000 tokens for
  Qwen) and can bend that text. So "auto" steps are parsed, and a call
  that does not parse is one line for the user.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Callable, Sequence

from engines.api import ChatMessage, ToolFunction

FAMILIES = ("hermes", "llama3", "mistral")  # engines.tools.call_formats reads each and names it for the UI
MAX_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 1024  # a tool's description; a schema's inner descriptions get the same cap
MAX_TOOLS = 64  # more would crowd out the conversation on a small context
PROBE = ToolFunction("atelier_probe_tool_7f3", "Probe.", {"type": "object", "properties": {}})

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u2029]")
_TEMPLATE_LIKE = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")
# Markup that chat templates use as turn and call delimiters: <|...|>, <tool_call>, </tools>, [INST], [TOOL_CALLS]...
_MARKUP = re.compile(r"<\|[^<>|]{0,40}\|>|</?[A-Za-z_][A-Za-z0-9_]{0,30}>|\[/?[A-Z][A-Z_]{1,30}\]")
_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def detect_tool_format(render: Callable[[list[dict], list[dict] | None], str], source: str) -> str | None:
    """The template's tool-call family, or None when it has none Atelier reads.

    ``render(messages, tools)`` renders the template; a template that fails on the probe has none.
    """
    messages = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi"}]
    try:
        without = render(messages, None)
        with_probe = render(messages, tools_payload([PROBE]))
    except Exception:  # noqa: BLE001 - a template that cannot render tools has no tool format
        return None
    if with_probe == without or PROBE.name not in with_probe:
        return None
    if "[TOOL_CALLS]" in source:
        # Mistral's v11 templates write ``[TOOL_CALLS]name[ARGS]{...}``; both markers are control tokens the
        # engine does not print, so the name and its arguments would arrive glued together: not read yet.
        return None if "[ARGS]" in source else "mistral"
    if "<tool_call>" in source:
        return "hermes"
    if "<|python_tag|>" in source or ('"parameters"' in source and "<|start_header_id|>" in source):
        return "llama3"
    return None


def clean_text(text: object, limit: int = MAX_DESCRIPTION_CHARS,
               has_control_text: Callable[[str], bool] | None = None) -> str:
    """Untrusted text made safe for a template's own prompt text: no control characters or markup, at most ``limit``."""
    text = text if isinstance(text, str) else ""
    previous = None
    while previous != text:  # "<<|x|>|im_end|>" must not become "<|im_end|>" after one pass
        previous = text
        text = _MARKUP.sub("", _TEMPLATE_LIKE.sub("", _CONTROL.sub(" ", text)))
    if has_control_text is not None and text and has_control_text(text):
        text = re.sub(r"[<>\[\]|]", "", text)  # whatever else this vocabulary reads as markup
    return text[:limit]


def clean_name(name: str) -> str:
    """A tool name as templates and parsers expect it: letters, digits, ``_.-``, at most 64."""
    return _NAME.sub("_", name or "")[:MAX_NAME_CHARS] or "tool"


def _clean_value(value, clean: Callable[[object], str]):
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [_clean_value(item, clean) for item in value]
    if isinstance(value, dict):
        return {clean(key)[:MAX_NAME_CHARS] if isinstance(key, str) else key: _clean_value(item, clean)
                for key, item in value.items()}
    return value


def tools_payload(tools: Sequence[ToolFunction],
                  has_control_text: Callable[[str], bool] | None = None) -> list[dict]:
    """The ``tools`` variable: OpenAI's function list, every string cleaned and capped."""

    def clean(text: object) -> str:
        return clean_text(text, MAX_DESCRIPTION_CHARS, has_control_text)

    return [{"type": "function", "function": {
        "name": clean_name(tool.name),
        "description": clean(tool.description),
        "parameters": _clean_value(tool.parameters if isinstance(tool.parameters, dict) else {"type": "object"}, clean),
    }} for tool in list(tools)[:MAX_TOOLS]]


def call_id_for(family: str | None, call_id: str) -> str:
    """Mistral's templates insist on nine letters and digits; others keep the id as it is."""
    if family != "mistral" or re.fullmatch(r"[A-Za-z0-9]{9}", call_id or ""):
        return call_id
    return hashlib.sha1((call_id or "").encode("utf-8")).hexdigest()[:9]


def messages_payload(messages: Sequence[ChatMessage], family: str | None,
                     has_control_text: Callable[[str], bool] | None = None) -> list[dict]:
    """Message dicts for the template: calls and results in the shape templates read."""

    def clean(text: object) -> str:
        return clean_text(text, 1 << 20, has_control_text)

    out: list[dict] = []
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            calls = [{"id": call_id_for(family, call.id), "type": "function",
                      "function": {"name": clean_name(call.name), "arguments": _clean_value(call.arguments, clean)}}
                     for call in message.tool_calls]
            out.append({"role": "assistant", "content": message.content, "tool_calls": calls})
        elif message.role == "tool":
            out.append({"role": "tool", "content": message.content, "name": clean_name(message.name or ""),
                        "tool_call_id": call_id_for(family, message.tool_call_id or "")})
        else:
            out.append({"role": message.role, "content": message.content})
    return _one_call_per_turn(out) if family == "llama3" else out


def _one_call_per_turn(payload: list[dict]) -> list[dict]:
    """Llama 3.1's template takes one call per assistant turn: [A(c1, c2), T1, T2] becomes [A(c1), T1, A(c2), T2]."""
    out: list[dict] = []
    i = 0
    while i < len(payload):
        message = payload[i]
        calls = message.get("tool_calls") or []
        if len(calls) <= 1:
            out.append(message)
            i += 1
            continue
        results = []
        j = i + 1
        while j < len(payload) and payload[j]["role"] == "tool":
            results.append(payload[j])
            j += 1
        by_id = {r["tool_call_id"]: r for r in results}
        for k, call in enumerate(calls):
            out.append(dict(message, content=message["content"] if k == 0 else "", tool_calls=[call]))
            if call["id"] in by_id:
                out.append(by_id.pop(call["id"]))
        out.extend(by_id.values())
        i = j
    return out


def call_schema(family: str, tools: Sequence[ToolFunction]) -> dict:
    """The JSON schema of one call object in the family's syntax (the arguments in their grammar-safe shape)."""
    from engines.llama.grammar import shape_only

    key = "parameters" if family == "llama3" else "arguments"
    one = [{"type": "object", "properties": {"name": {"const": clean_name(tool.name)}, key: shape_only(tool.parameters)},
            "required": ["name", key], "additionalProperties": False} for tool in tools]
    return one[0] if len(one) == 1 else {"anyOf": one}


def call_grammar(family: str, tools: Sequence[ToolFunction], llm):
    """A ``LlamaGrammar`` that allows exactly one call in the family's syntax (tool choice "required")."""
    from engines.llama.grammar import grammar_for_schema

    wrap = {"hermes": ('"<tool_call>\\n" ', ' "\\n</tool_call>"'),
            "mistral": ('"[TOOL_CALLS][" ', ' "]"'),
            "llama3": ("", "")}[family]
    return grammar_for_schema(call_schema(family, tools), llm, wrap=wrap)


def flatten_tool_turns(messages: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    """Calls and results as plain turns, for a template without a tool role (the JSON fallback's form).

    Each step's calls become the assistant's ``{"tool_calls": [...]}``, and the results of one step one user
    turn ("Result of add: 5"): templates without tools (Gemma's among them) insist that user and assistant
    turns alternate. A chat that used tools and then goes on without them is sent this way too.
    """
    flat: list[ChatMessage] = []
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            calls = [{"name": call.name, "arguments": call.arguments} for call in message.tool_calls]
            flat.append(ChatMessage("assistant", json.dumps({"tool_calls": calls}, ensure_ascii=False)))
        elif message.role == "tool":
            line = f"Result of {message.name or 'the tool'}: {message.content}"
            if flat and flat[-1].role == "user" and flat[-1].content.startswith("Result of "):
                flat[-1] = ChatMessage("user", f"{flat[-1].content}\n{line}")
            else:
                flat.append(ChatMessage("user", line))
        else:
            flat.append(message)
    return tuple(flat)
