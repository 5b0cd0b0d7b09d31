"""The tool loop of one chat reply: the model calls tools, sees their results, and answers.

Each *step* is one ordinary generation through whatever runs the model
(``generate(request)`` yields engine events: ``ScheduledHost.generate``
in the CLI, the chat worker's host in the GUI). A step either answers
(the loop ends) or makes calls. Each call is, in order:

1. parsed from the model's JSON (never executed);
2. checked: an unknown tool or arguments that do not match the tool's
   schema are not run; the problems go back to the model as the call's
   error result (status ``invalid``), and are shown;
3. approved: ``approvals.decide(call)`` says ``once``, ``always`` (for
   that tool, remembered by the :class:`Approvals`) or ``refuse``; a
   refused call goes back to the model as "the user refused";
4. run (status ``running``, with progress events), then ``done`` or
   ``error``. A server that fails gives one line, which the model gets as
   the result and the user sees; the conversation goes on.

Every change of a call is an :class:`ToolCallEvent` on ``on_event`` (the
GUI draws the call and its result under the reply; the chat turn saves it).

A call identical to an earlier one of the same reply (same tool, same
arguments) is not run again: it gets the earlier result, and a step made
only of such repeats is followed by a step that must answer. Small models
otherwise go round in circles (the demo asked for the time eight times).

The loop is bounded: at most :data:`MAX_CALLS_PER_TURN` calls per reply.
A small model can repeat a call forever, and each step costs a generation
and context; eight is room for a real chain (look something up, convert
it, compute with it) while a stuck model is stopped within seconds, not
when the context is full. Past the bound the model is asked for its
answer with tools off.

Two modes, named in the UI by :attr:`LoopOutcome.mode`:

- ``tool_format`` given (``ModelInfo.tool_format``: the model's chat template
  defines tools, see :mod:`engines.llama.tool_templates`): each step sends
  the conversation as it is, calls and results included, with the tools in
  ``TextRequest.tools``; the engine renders them through the template, and
  the reply is read in that family's syntax (:mod:`engines.tools.call_formats`).
  A step that must call (tool choice "required") is held to the syntax by a
  grammar; otherwise the reply is parsed, and a call that does not parse is
  one line for the user, the text before it the answer.
- otherwise the grammar fallback (:mod:`engines.tools.fallback`): every step
  is constrained to ``{"tool_calls": [...]}`` or ``{"reply": "..."}``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Literal

from engines.api import (
    ChatMessage,
    EngineEvent,
    FinishedEvent,
    NoticeEvent,
    TextRequest,
    TextResult,
    TokenEvent,
    ToolCallRequest,
)
from engines.errors import EngineError
from engines.tools import call_formats, fallback
from engines.tools.arguments import argument_problems
from engines.tools.toolset import ToolSet

MAX_CALLS_PER_TURN = 8
Decision = Literal["once", "always", "refuse"]
Status = Literal["pending", "running", "done", "error", "refused", "invalid"]
REFUSED_RESULT = "The user did not allow this call."


@dataclass
class ToolCall:
    """One call as shown and saved (engines/chat/records.py, table tool_calls)."""

    call_id: str
    round: int  # the model step that made it (calls of one step share it)
    seq: int  # its place among all calls of the reply
    name: str  # the name the model called
    server: str  # "" when the tool does not exist
    arguments: object  # as the model wrote them, parsed
    text: str = ""  # what the model wrote before its calls (the fallback writes nothing)
    status: Status = "pending"
    result: str = ""
    structured: dict | None = None

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class ToolCallEvent:
    """A call appeared or changed status; ``call`` is a snapshot."""

    call: ToolCall


@dataclass(frozen=True)
class ToolProgressEvent:
    call_id: str
    progress: float
    total: float | None
    message: str | None


class Approvals:
    """Who allows calls: ``ask(call)`` (the GUI's dialog, the CLI's prompt), or everything (``--allow-tools``).

    Without either, every call is refused with ``refusal`` (a non-interactive run). "Always" is
    remembered here, per tool name, for as long as this object lives (the GUI keeps one per chat).
    """

    def __init__(self, ask: Callable[[ToolCall], Decision] | None = None, *, allow_all: bool = False,
                 always: Iterable[str] = (), refusal: str = REFUSED_RESULT) -> None:
        self._ask = ask
        self.allow_all = allow_all
        self.always = set(always)
        self.refusal = refusal

    def decide(self, call: ToolCall) -> Decision:
        if self.allow_all or call.name in self.always:
            return "once"
        if self._ask is None:
            return "refuse"
        decision = self._ask(call)
        if decision == "always":
            self.always.add(call.name)
        return decision if decision in ("once", "always", "refuse") else "refuse"


@dataclass
class LoopOutcome:
    text: str  # the answer shown to the user
    result: TextResult | None  # the last step's figures (its text is the raw JSON in the fallback)
    calls: list[ToolCall] = field(default_factory=list)
    # What the reply adds to the conversation before its answer: one assistant message per step
    # that called tools, each followed by its calls' results (role "tool"), as later turns send them.
    messages: list[ChatMessage] = field(default_factory=list)
    mode: str = fallback.FALLBACK_NAME


def run_tool_turn(generate: Callable[[TextRequest], Iterable[EngineEvent]], request: TextRequest, tools: ToolSet,
                  approvals: Approvals, on_event: Callable[[object], None], *, first_choice: str = "auto",
                  max_calls: int = MAX_CALLS_PER_TURN, tool_format: str | None = None) -> LoopOutcome:
    """Run steps until the model answers; ``first_choice`` "required" makes the first step call a tool.

    ``tool_format``: the model template's own tool-call family (``ModelInfo.tool_format``), else the fallback.
    """
    native = tool_format if tool_format in call_formats.NAMES else None
    definitions = tools.definitions()
    conversation = list(request.messages)
    outcome = LoopOutcome("", None, mode=call_formats.mode_name(native) if native else fallback.FALLBACK_NAME)
    choice = first_choice if definitions else "none"
    step = 0
    while True:
        step += 1
        left = max_calls - len(outcome.calls)
        step_choice = "none" if left <= 0 else choice
        if native:
            step_request = replace(request, messages=tuple(conversation), json_schema=None,
                                   tools=definitions if step_choice != "none" else (),
                                   tool_choice=step_choice if step_choice != "none" else "auto")
        else:
            step_request = replace(request, messages=fallback.prepare(conversation, definitions if step_choice != "none"
                                                                      else ()),
                                   json_schema=fallback.step_schema(definitions, step_choice, left), tools=())
        text, result = _one_step(generate, step_request, on_event, native)
        outcome.result = result
        if result is None or result.finish_reason == "cancelled":
            outcome.text = call_formats.visible_text(native, text) if native else fallback.partial_reply(text) or ""
            return outcome
        if native:
            try:
                reply, calls = call_formats.parse_reply(native, text)
            except call_formats.MalformedCall as bad:  # one line, and the text before it is the answer
                on_event(NoticeEvent(bad.message if result.finish_reason != "length" else
                                     f"The model's tool call was cut off at the token limit ({result.completion_tokens} "
                                     "tokens) before it was complete, so it was not run; raise Max tokens to let it "
                                     "finish."))
                outcome.text = bad.text
                _stream_rest(outcome.text, text, native, on_event)
                return outcome
            if not calls or step_choice == "none":
                outcome.text = reply
                _stream_rest(reply, text, native, on_event)
                return outcome
        else:
            try:
                reply, calls = fallback.parse_step(text)
            except ValueError:
                outcome.text = fallback.partial_reply(text) or ""
                if not outcome.text:
                    on_event(NoticeEvent(f"The model's answer was cut off at the token limit "
                                         f"({result.completion_tokens} tokens) before it was complete; raise Max "
                                         "tokens to let it finish."))
                return outcome
            if reply is not None:
                outcome.text = reply
                return outcome
            reply = ""
        assistant_calls, results, repeats = [], [], 0
        for index, raw in enumerate(calls):
            call = _new_call(raw, step, len(outcome.calls) + 1, tools)
            call.text = reply if index == 0 else ""
            earlier = next((c for c in outcome.calls if (c.name, c.arguments_json) == (call.name, call.arguments_json)
                            and c.status in ("done", "error")), None)
            outcome.calls.append(call)
            if index >= left:
                _finish(call, "refused", f"Not run: at most {max_calls} tool calls are made in one reply.", on_event)
            elif earlier is not None:  # a model going round in circles: the same call again gets the same answer
                repeats += 1
                _finish(call, earlier.status, earlier.result, on_event)
                call.structured = earlier.structured
            else:
                _carry_out(call, tools, approvals, on_event)
            assistant_calls.append(ToolCallRequest(call.call_id, call.name,
                                                   call.arguments if isinstance(call.arguments, dict) else {}))
            results.append(ChatMessage("tool", call.result, tool_call_id=call.call_id, name=call.name))
        assistant = ChatMessage("assistant", reply, tool_calls=tuple(assistant_calls))
        conversation += [assistant, *results]
        outcome.messages += [assistant, *results]
        # A step that only repeated earlier calls learns nothing new: the next one must answer.
        choice = "none" if repeats == len(calls) else "auto"


def _one_step(generate, request: TextRequest, on_event, native: str | None = None) -> tuple[str, TextResult | None]:
    """Generate one step; stream the reply as it is written, never the JSON or call syntax around it."""
    text, shown, result = "", "", None
    events = generate(request)
    try:
        for event in events:
            if isinstance(event, TokenEvent):
                text += event.text
                reply = call_formats.visible_text(native, text) if native else fallback.partial_reply(text)
                if reply is not None and len(reply) > len(shown):
                    on_event(TokenEvent(reply[len(shown):]))
                    shown = reply
            elif isinstance(event, FinishedEvent):
                result = event.result
            else:
                on_event(event)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # a step ended early (the history could not be saved) stops the engine's request
    return text, result


def _stream_rest(answer: str, text: str, native: str, on_event) -> None:
    """Stream what of the answer was held back while it could still have been a call (a reply starting with "{")."""
    shown = call_formats.visible_text(native, text)
    if answer.startswith(shown) and len(answer) > len(shown):
        on_event(TokenEvent(answer[len(shown):]))


def _new_call(raw: dict, step: int, seq: int, tools: ToolSet) -> ToolCall:
    name = raw.get("name") if isinstance(raw.get("name"), str) else ""
    offered = tools.get(name)
    return ToolCall(f"call_{uuid.uuid4().hex[:12]}", step, seq, name, offered.server if offered else "",
                    raw.get("arguments", {}))


def _carry_out(call: ToolCall, tools: ToolSet, approvals: Approvals, on_event) -> None:
    offered = tools.get(call.name)
    if offered is None:
        names = ", ".join(tools.names()) or "none"
        _finish(call, "invalid", f"Error: there is no tool '{call.name}'. The tools are: {names}.", on_event)
        return
    problems = argument_problems(offered.listed.input_schema, call.arguments)
    if problems:
        _finish(call, "invalid", f"Error: the arguments do not match the schema of '{call.name}': "
                f"{'; '.join(problems)}.", on_event)
        return
    on_event(ToolCallEvent(replace(call)))  # pending: shown with its arguments while the user decides
    if approvals.decide(call) == "refuse":
        _finish(call, "refused", approvals.refusal, on_event)
        return
    call.status = "running"
    on_event(ToolCallEvent(replace(call)))
    try:
        result = tools.run(call.name, call.arguments,
                           lambda value, total, message: on_event(ToolProgressEvent(call.call_id, value, total, message)))
    except EngineError as exc:  # ToolServerError and the like: one line, and the chat goes on
        on_event(NoticeEvent(exc.message))
        _finish(call, "error", f"Error: {exc.message}", on_event)
        return
    call.structured = result.structured
    _finish(call, "error" if result.is_error else "done", result.text, on_event)


def _finish(call: ToolCall, status: Status, result: str, on_event) -> None:
    call.status, call.result = status, result
    on_event(ToolCallEvent(replace(call)))
