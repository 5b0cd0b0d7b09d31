"""Tools on the API server, the same for both APIs: what a request offers, and what the model's reply called.

Agents (the ``openai`` and ``anthropic`` SDKs, LangChain, editors) send
tools with a request and expect the model's calls back; they run the tools
themselves and send the results in the next request. The server never runs
anything: it only offers the tools to the model and reads the calls out of
the reply. :mod:`engines.server.openai_tools` and
:mod:`engines.server.anthropic_tools` translate each API's JSON to and from
the pieces here, which are the chat window's own (``engines.tools``): no
second parser, no second renderer.

- :func:`checked_tools` refuses, naming the field, what the engine could not
  honour: a name a chat template would rewrite (the model would then call a
  tool the client never named), two tools with one name, more tools than a
  template is given (:data:`MAX_TOOLS`), and an argument schema llama.cpp's
  grammar cannot take (the same check the chat panel makes).
- :class:`ToolOffer` is the request's tools and tool choice; ``offered`` is
  what the model is really shown ("none" shows nothing; a choice that names
  one tool shows that one and requires a call of it).
- Which way the model gets them depends on its chat template, as in the chat
  (:mod:`engines.tools.loop`): a template with its own tool syntax
  (``ModelInfo.tool_format``) renders them and its calls are read in that
  syntax (:mod:`engines.tools.call_formats`); any other model answers in
  Atelier's JSON format under a grammar (:mod:`engines.tools.fallback`).
  :func:`model_tool_format` loads the model first when it is not loaded yet,
  since only the loaded model knows its template.
- :class:`ReplyReader` follows the reply token by token: what it gives back
  is the text a client may see (never a call's syntax, so a streamed reply
  never shows ``<tool_call>``); at the end, the calls. A call that does not
  parse is not a failure of the request: the reply is then plain text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Literal, Sequence

from engines.api import ChatMessage, ToolFunction
from engines.errors import EngineError
from engines.llama.tool_templates import MAX_TOOLS, clean_name
from engines.server.errors import ApiError, from_engine_error
from engines.server.streams import cancel_on_disconnect
from engines.tools import call_formats, fallback

Choice = Literal["auto", "required", "none"]


@dataclass(frozen=True)
class ToolOffer:
    """The tools of a request and its tool choice; ``only`` names the one tool a call is required of."""

    tools: tuple[ToolFunction, ...] = ()
    choice: Choice = "auto"
    only: str | None = None
    parallel: bool = True  # False: at most one call per reply (OpenAI's parallel_tool_calls, Anthropic's opposite)

    @property
    def offered(self) -> tuple[ToolFunction, ...]:
        """The tools the model is shown: none for "none", the named one when the choice names one."""
        if self.choice == "none":
            return ()
        if self.only is not None:
            return tuple(tool for tool in self.tools if tool.name == self.only)
        return self.tools


def checked_tools(entries: Sequence[tuple[str, str | None, dict | None]], params: Sequence[str],
                  schema_key: str) -> tuple[ToolFunction, ...]:
    """``(name, description, schema)`` per tool as ToolFunctions; ApiError(400) naming the field otherwise.

    ``params[i]`` is where tool ``i`` sits in the request ("tools[0].function"), and ``schema_key`` the name
    of its schema there ("parameters", "input_schema"), for the messages.
    """
    if len(entries) > MAX_TOOLS:
        raise ApiError(400, f"At most {MAX_TOOLS} tools can be offered at once, not {len(entries)}.", param="tools")
    tools, seen = [], {}
    for (name, description, parameters), where in zip(entries, params):
        if not name or clean_name(name) != name:  # a template would show the model another name
            raise ApiError(400, f"'{where}.name' must be 1 to 64 letters, digits, '_', '-' or '.' (got "
                                f"{json.dumps(name)[:80]}).", param=f"{where}.name")
        if name in seen:
            raise ApiError(400, f"Two tools are named '{name}' ({seen[name]} and {where}); each tool needs its own "
                                "name.", param=f"{where}.name")
        seen[name] = where
        schema = parameters if parameters is not None else {"type": "object", "properties": {}}
        _check_schema(schema, name, f"{where}.{schema_key}")
        tools.append(ToolFunction(name, description or "", schema))
    return tuple(tools)


def _check_schema(schema: dict, name: str, param: str) -> None:
    """The arguments' schema must become a grammar: the one a required call is held to (shape only, as there)."""
    from engines.llama.grammar import check_schema, shape_only

    try:
        check_schema(shape_only(schema))
    except EngineError as exc:
        reason = exc.message.removeprefix("The JSON schema cannot be used to constrain the reply: ").rstrip(".")
        raise ApiError(400, f"The schema of the tool '{name}' ('{param}') cannot be used: {reason}.",
                       param=param) from None


def tool_offer(tools: tuple[ToolFunction, ...], choice: Choice, only: str | None, parallel: bool,
               choice_param: str) -> ToolOffer:
    """The offer, once the choice is checked against the tools: a call cannot be required of no tool."""
    if choice == "required" and not tools:
        raise ApiError(400, f"'{choice_param}' requires a tool call, but the request offers no tools.",
                       param=choice_param)
    if only is not None and only not in {tool.name for tool in tools}:
        names = ", ".join(tool.name for tool in tools)
        raise ApiError(400, f"'{choice_param}' names the tool '{only[:64]}', which is not among the tools offered "
                            f"({names}).", param=choice_param)
    return ToolOffer(tools, choice, only, parallel)


def refuse_with_schema(offer: ToolOffer, has_schema: bool, param: str) -> None:
    if offer.offered and has_schema:
        raise ApiError(400, f"'tools' and '{param}' cannot be used together: a reply that may call tools cannot also "
                            "be held to a JSON schema.", param=param)


def linked_results(messages: Sequence[ChatMessage], params: Sequence[str]) -> tuple[ChatMessage, ...]:
    """The conversation with each tool result named after the call it answers (templates show the tool's name).

    A result must answer a call of an earlier assistant message; ``params[i]`` is where message ``i`` names
    the call it answers ("messages[3].tool_call_id"), for the message.
    """
    called: dict[str, str] = {}
    linked = []
    for message, where in zip(messages, params):
        called.update((call.id, call.name) for call in message.tool_calls)
        if message.role == "tool":
            if message.tool_call_id not in called:
                raise ApiError(400, f"'{where}' is '{(message.tool_call_id or '')[:64]}', which matches no tool call "
                                    "of an earlier assistant message.", param=where)
            message = replace(message, name=called[message.tool_call_id])
        linked.append(message)
    return tuple(linked)


async def model_tool_format(request, served, client: str) -> str | None:
    """The served model's own tool-call family (``ModelInfo.tool_format``), loading the model if it is not yet.

    Loading is the first thing the request needs anyway: the generation that follows finds the model loaded.
    A model the scheduler's host does not describe (a remote one) has none, and gets the JSON fallback.
    """
    from engines.scheduler import Work

    context = request.app.state.context
    scheduler = context.scheduler
    info = scheduler.model_info(scheduler.normalise(Work(served.engine, served.spec)).key)
    if info is None:
        stream = await context.start(served, None, client)
        async with cancel_on_disconnect(request.receive, stream):
            try:
                while await stream.next() is not None:
                    pass
            except EngineError as exc:
                raise from_engine_error(exc, "model") from None
        info = stream.model_info
    family = getattr(info, "tool_format", None)
    return family if family in call_formats.NAMES else None


def request_parts(offer: ToolOffer | None, messages: tuple[ChatMessage, ...], family: str | None,
                  json_schema: dict | None = None) -> dict:
    """The TextRequest fields that offer the tools the model's way: ``messages``, ``tools``, ``tool_choice``, ``json_schema``.

    ``family`` None: Atelier's JSON format, described in the system message and held to by a grammar.
    ``json_schema`` (the client's response format) applies when no tool is offered (refused with tools).
    """
    offered = offer.offered if offer is not None else ()
    if not offered:  # earlier calls and results still render (the template's own way, or as plain turns)
        return {"messages": messages, "tools": (), "tool_choice": "auto", "json_schema": json_schema}
    choice = "required" if offer.only is not None else offer.choice
    if family is not None:
        return {"messages": messages, "tools": offered, "tool_choice": choice, "json_schema": None}
    most = 1 if not offer.parallel else fallback.MAX_CALLS_PER_STEP
    return {"messages": fallback.prepare(messages, offered), "tools": (), "tool_choice": "auto",
            "json_schema": fallback.step_schema(offered, choice, most)}


@dataclass
class ReadReply:
    """The end of a reply: ``content`` (its text for the client), ``rest`` (that text not streamed yet), the calls."""

    content: str
    rest: str
    calls: list[dict] = field(default_factory=list)  # {"name", "arguments"}, as the model wrote them, parsed


class ReplyReader:
    """Follows one reply: :meth:`feed` gives the text that may be shown now, :meth:`end` the rest and the calls.

    ``mode`` "plain" (no tools offered: every token is text), "native" (``family``'s syntax) or "fallback"
    (Atelier's JSON format). Streamed and whole replies read the same way, so they agree.
    """

    def __init__(self, mode: Literal["plain", "native", "fallback"], family: str | None = None,
                 parallel: bool = True) -> None:
        self.mode = mode
        self.family = family
        self.parallel = parallel
        self.text = ""  # the reply as the model wrote it
        self._shown = ""

    @classmethod
    def for_offer(cls, offer: ToolOffer | None, family: str | None) -> "ReplyReader":
        if offer is None or not offer.offered:
            return cls("plain")
        return cls("native", family, offer.parallel) if family is not None else cls("fallback", None, offer.parallel)

    def feed(self, piece: str) -> str:
        """The text of ``piece`` that can be sent now (possibly held back while it may still become a call)."""
        if self.mode == "plain":
            return piece
        self.text += piece
        if self.mode == "native":
            # Spaces before a call are not part of the answer (parse_reply strips them): held until text follows.
            visible = call_formats.visible_text(self.family, self.text).rstrip()
        else:
            visible = fallback.partial_reply(self.text) or ""
        if len(visible) <= len(self._shown) or not visible.startswith(self._shown):
            return ""
        new, self._shown = visible[len(self._shown):], visible
        return new

    def end(self, whole: str) -> ReadReply:
        """The reply read to its end; ``whole`` is the engine's text (a plain reply keeps none while it streams).

        The caller feeds a reply that was not streamed whole first, so both read the same way.
        """
        if self.mode == "plain":
            return ReadReply(whole, "")
        content, calls = self._parse()
        if calls and not self.parallel:
            calls = calls[:1]
        rest = content[len(self._shown):] if content.startswith(self._shown) else ""
        return ReadReply(content, rest, calls)

    def _parse(self) -> tuple[str, list[dict]]:
        text = self.text
        if self.mode == "native":
            try:
                return call_formats.parse_reply(self.family, text)
            except call_formats.MalformedCall:  # not a call after all: what the model wrote is the answer
                return text, []
        try:
            reply, calls = fallback.parse_step(text)
        except ValueError:  # cut off, or not the format: the answer so far, else the text as written
            reply = fallback.partial_reply(text)
            return (text if reply is None else reply), []
        return (reply, []) if reply is not None else ("", calls)


def arguments_json(arguments: object) -> str:
    """A call's arguments as the JSON string OpenAI's ``function.arguments`` and Anthropic's input deltas carry."""
    return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
