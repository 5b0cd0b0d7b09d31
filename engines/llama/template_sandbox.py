"""Chat templates rendered in a sandbox with a time and a size budget.

A GGUF file carries its chat template as Jinja source, and a hostile one is
not only a sandbox escape (Jinja's immutable sandbox stops those) but a CPU
or memory bomb (defect D8): nested ``range(100000)`` loops never end, a
string doubled in a loop or ``'x'*100000*100000`` asks for gigabytes. The
sandbox alone checks none of that, and a load that renders such a template
never ends while Stop does nothing.

So every compile and render here runs under a :class:`RenderBudget`:

- **time and cancel**: while a template compiles or renders, a watcher
  thread looks at the deadline and the request's cancel flag every 20 ms
  and, when either trips, raises the error inside the rendering thread at
  its next bytecode (see :class:`_Watcher`). Any Python loop is
  interrupted, and the render itself runs at full speed;
- **size**: work that happens inside one C call, which no interrupt can
  reach, is checked before it runs: the ``*``, ``**``, ``+`` and ``%``
  operators (intercepted by the sandbox), string concatenation with ``~``
  (through a code generator that routes it here), every filter and every
  call (their arguments, integer widths and the size of what they return),
  and every value written to the output. Sizes are measured without ever
  converting a value to text, so a list nested in itself forty times is
  refused instead of printed.

Going over the budget raises :class:`TemplateTooSlow` or
:class:`TemplateTooLarge`, a Stop raises :class:`TemplateCancelled`. They
derive from ``BaseException`` on purpose: Jinja catches ``Exception`` in
places (constant folding at compile time, for one), and must not swallow
them.
"""

from __future__ import annotations

import ctypes
import re
import string
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from jinja2 import BaseLoader, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

DEFAULT_SECONDS = 2.0  # real templates render in milliseconds; this is for a busy, slow machine
DEFAULT_MAX_CHARS = 16 * 2**20  # any one value, and the whole output, for a small conversation
_WATCH_POLL_S = 0.02  # how often the watcher looks at the clock and the cancel flags
_MAX_VISITS = 100_000  # items in one value: a chat template's data is a few messages
_HEAVY_FILTERS = {"wordwrap", "urlize"}  # long C work (regular expressions) per character of input
_HEAVY_INPUT_CHARS = 1_000_000
_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class TemplateBudgetError(BaseException):
    """The template went over its budget; ``reason`` completes "the model's chat template …"."""

    reason = "went over its budget"


class TemplateTooSlow(TemplateBudgetError):
    reason = "took too long to render"


class TemplateTooLarge(TemplateBudgetError):
    reason = "made a text too large to render"


class TemplateCancelled(BaseException):
    """The request was cancelled while its template rendered."""


@dataclass(frozen=True)
class RenderBudget:
    """How long a render may take and how large any value in it may grow.

    ``cancel`` is the request's cancel flag (anything with ``is_set()``).
    """

    seconds: float = DEFAULT_SECONDS
    max_chars: int = DEFAULT_MAX_CHARS
    cancel: Any = None

    @classmethod
    def for_text(cls, text_chars: int, cancel: Any = None) -> "RenderBudget":
        """A budget that grows with the conversation: its text is copied a few times by any template."""
        return cls(DEFAULT_SECONDS + text_chars / 2_000_000, DEFAULT_MAX_CHARS + 4 * text_chars, cancel)


class _Guard:
    """The running budget of one compile or render."""

    def __init__(self, budget: RenderBudget) -> None:
        self.max_chars = budget.max_chars
        self.deadline = time.monotonic() + budget.seconds
        self.cancel = budget.cancel
        self.fired = False  # the watcher sent this render its interrupt
        self.delivered = False  # ... and the render raised it

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise TemplateCancelled()
        if time.monotonic() > self.deadline:
            raise TemplateTooSlow()

    def size(self, chars: int) -> None:
        if chars > self.max_chars:
            raise TemplateTooLarge()

    def measure(self, value: Any) -> None:
        """Refuse a value whose text would exceed the budget, without building that text.

        Containers are walked, each visit counted, so a structure that holds
        itself many times over is refused in bounded time.
        """
        if type(value) is str:  # the common case, first and cheap
            if len(value) > self.max_chars:
                raise TemplateTooLarge()
            return
        limit = self.max_chars
        total = 0
        visits = 0
        stack = [value]
        while stack:
            item = stack.pop()
            visits += 1
            if visits > _MAX_VISITS:
                raise TemplateTooLarge()
            kind = type(item)
            if kind is str or kind is bytes or isinstance(item, (str, bytes)):
                total += len(item)
            elif kind is dict or isinstance(item, dict):
                total += len(item) + 1
                stack.extend(item.keys())
                stack.extend(item.values())
            elif kind is list or kind is tuple or isinstance(item, (list, tuple, set, frozenset)):
                total += len(item) + 1
                stack.extend(item)
            elif kind is int:
                total += item.bit_length() // 3 + 1
            else:
                total += 8
            if total > limit:
                raise TemplateTooLarge()

    def overdue(self) -> type[BaseException] | None:
        """What the watcher interrupts the render with now, if anything."""
        if self.cancel is not None and self.cancel.is_set():
            return _InterruptedCancelled
        if time.monotonic() > self.deadline:
            return _InterruptedTooSlow
        return None

    def run(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` in this thread, interrupted by the watcher when it overruns or is cancelled."""
        self.check()
        thread_id = _WATCHER.add(self)
        try:
            return work()
        except _INTERRUPTS:
            self.delivered = True
            raise
        finally:
            _WATCHER.remove(thread_id, self)


class _InterruptedTooSlow(TemplateTooSlow):
    """Raised by the watcher, from outside."""


class _InterruptedCancelled(TemplateCancelled):
    """Raised by the watcher, from outside."""


_INTERRUPTS = (_InterruptedTooSlow, _InterruptedCancelled)


class _Watcher:
    """One daemon thread that interrupts renders that overrun their deadline or are cancelled.

    It raises the budget error *inside* the rendering thread with CPython's
    ``PyThreadState_SetAsyncExc``, which the interpreter delivers at the
    next bytecode boundary: any Python loop (the template's own, Jinja's,
    a filter's) is interrupted, and rendering costs nothing extra per line
    (a ``sys.settrace`` line tracer made Gemma 3's template 13 times slower).

    It fires at most once per render, under its lock. A render that ends
    leaves the watch under the same lock, so nothing fires after; if an
    interrupt was sent and has not arrived yet, the render waits for it to
    arrive (within microseconds) and drops it. So an interrupt is only ever
    raised while :meth:`_Guard.run` is on the stack. (Clearing it instead,
    with a NULL exception, would leave CPython's eval breaker set for good.)
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._jobs: dict[int, _Guard] = {}
        self._thread: threading.Thread | None = None
        self._idle = False  # the thread waits for a first job (it is woken only then)

    def add(self, guard: _Guard) -> int:
        thread_id = threading.get_ident()
        with self._changed:
            self._jobs[thread_id] = guard
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="template-watcher", daemon=True)
                self._thread.start()
            elif self._idle:
                self._changed.notify()
        return thread_id

    def remove(self, thread_id: int, guard: _Guard) -> None:
        with self._changed:
            if self._jobs.get(thread_id) is guard:
                del self._jobs[thread_id]
        if guard.fired and not guard.delivered:
            _absorb(guard)

    def _loop(self) -> None:
        with self._changed:
            while True:
                if not self._jobs:
                    self._idle = True
                    self._changed.wait()
                    self._idle = False
                    continue
                self._changed.wait(_WATCH_POLL_S)  # look after a while: most renders are over by then
                for thread_id, guard in list(self._jobs.items()):
                    if not guard.fired:
                        error = guard.overdue()
                        if error is not None:
                            guard.fired = True
                            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(error))
                self._changed.wait(_WATCH_POLL_S)


def _absorb(guard: _Guard) -> None:
    """Let an interrupt that was sent but not yet raised arrive here, and drop it."""
    give_up = time.monotonic() + 1.0  # it arrives at the next bytecode; this is for a swallowed one
    while not guard.delivered and time.monotonic() < give_up:
        try:
            _checkpoint()
        except _INTERRUPTS:
            guard.delivered = True


def _checkpoint() -> None:
    """A function call: CPython raises pending interrupts on entering it."""


_WATCHER = _Watcher()


class _BudgetedCodeGenerator(CodeGenerator):
    """Jinja's code generator with ``a ~ b`` routed through the environment's size check."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.budgeted_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with every way to grow a value or spin checked against a budget."""

    code_generator_class = _BudgetedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._finalize, **options)
        self.guard: _Guard | None = None
        self.globals.pop("lipsum", None)  # n paragraphs of filler text: no chat template needs it
        self.filters = {name: self.budgeted_filter(name, f) for name, f in self.filters.items()}

    def _guard(self) -> _Guard:
        if self.guard is None:  # compile-time constant folding outside a budget: fold nothing
            raise TemplateTooLarge()
        return self.guard

    def _finalize(self, value: Any) -> Any:
        self._guard().measure(value)
        return value

    def budgeted_concat(self, join: Callable, values: tuple) -> str:
        guard = self._guard()
        guard.measure(values)
        return join(values)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        guard = self._guard()
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
                    guard.size(len(seq) * max(count, 0))
            if isinstance(left, int) and isinstance(right, int):
                guard.size((left.bit_length() + right.bit_length()) // 3)
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
                guard.size(left.bit_length() * right // 3)
        elif operator == "+":
            if type(left) is str and type(right) is str:
                guard.size(len(left) + len(right))
            elif not (isinstance(left, (int, float)) and isinstance(right, (int, float))):
                guard.measure((left, right))
        elif operator == "%" and isinstance(left, str):
            _check_printf(left, guard)
            guard.measure(right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        guard = __self._guard()
        _check_arguments(args, kwargs, guard)
        result = super().call(__context, __obj, *args, **kwargs)
        guard.measure(result)
        return result

    def wrap_str_format(self, value: Any):
        wrapper = super().wrap_str_format(value)
        if wrapper is not None:
            _check_format_spec(value.__self__, self._guard())
        return wrapper

    def budgeted_filter(self, name: str, func: Callable) -> Callable:
        """``func`` as a filter whose arguments and result are checked against the budget."""
        environment = self
        pass_arg = getattr(func, "jinja_pass_arg", None)  # Jinja then passes a context first: not data

        def budgeted(*args: Any, **kwargs: Any) -> Any:
            guard = environment._guard()
            data = args[1:] if pass_arg is not None else args
            _check_arguments(data, kwargs, guard)
            if name in _HEAVY_FILTERS and data and isinstance(data[0], str) and len(data[0]) > _HEAVY_INPUT_CHARS:
                raise TemplateTooLarge()
            if name == "format" and data and isinstance(data[0], str):
                _check_printf(data[0], guard)
            elif name in ("indent", "replace", "join"):
                _predict(name, data, kwargs, guard)
            result = func(*args, **kwargs)
            guard.measure(result)
            return result

        budgeted.__name__ = getattr(func, "__name__", name)
        budgeted.__doc__ = func.__doc__
        if pass_arg is not None:
            budgeted.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
        return budgeted


def _check_arguments(args: tuple, kwargs: dict, guard: _Guard) -> None:
    """Integer widths beyond the budget (``center``, ``ljust``, ``zfill``…) and oversized inputs."""
    for value in (*args, *kwargs.values()):
        kind = type(value)
        if kind is str:
            guard.size(len(value))
        elif kind is int:
            guard.size(abs(value))
        elif kind is not bool and kind is not float and value is not None:
            guard.measure(value)


def _check_printf(fmt: str, guard: _Guard) -> None:
    for match in _WIDTH.finditer(fmt):
        for width in match.groups():
            if width == "*":
                raise TemplateTooLarge()
            if width:
                guard.size(int(width))


def _check_format_spec(fmt: str, guard: _Guard) -> None:
    """``'{:>9999999999}'.format(x)``: the width hides in the format string."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    for _text, _field, spec, _conversion in fields:
        if spec:
            if "{" in spec:
                raise TemplateTooLarge()
            for number in re.findall(r"\d+", spec):
                guard.size(int(number))


def _predict(name: str, data: tuple, kwargs: dict, guard: _Guard) -> None:
    """The size a filter would produce, for the ones that multiply their input (``data``: its arguments)."""
    if name == "replace" and len(data) >= 3 and all(isinstance(a, str) for a in data[:3]):
        value, old, new = data[:3]
        hits = value.count(old) if old else len(value) + 1
        guard.size(len(value) + hits * max(0, len(new) - len(old)))
    elif name == "indent" and data and isinstance(data[0], str):
        width = kwargs.get("width", data[1] if len(data) > 1 else 4)
        width = len(width) if isinstance(width, str) else int(width or 0)
        guard.size(len(data[0]) + (data[0].count("\n") + 1) * width)
    elif name == "join" and data and isinstance(data[0], (list, tuple)):
        sep = kwargs.get("d", data[1] if len(data) > 1 else "")
        if isinstance(sep, str):
            guard.size(len(sep) * len(data[0]))


class SandboxedChatTemplate:
    """A GGUF chat template compiled in a :class:`BudgetedEnvironment`.

    It mirrors llama-cpp-python's ``Jinja2ChatFormatter`` (the same
    environment options, extensions, globals and ``tojson``), which Atelier
    no longer uses for files' templates because it renders without limits.
    One render at a time per template (the engine host renders on one thread).
    """

    def __init__(self, source: str, eos_token: str, bos_token: str, budget: RenderBudget | None = None) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.eos_token = eos_token
        self.bos_token = bos_token
        self._strftime_now = Jinja2ChatFormatter.strftime_now
        self._environment = BudgetedEnvironment(
            loader=BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[Jinja2ChatFormatter.IgnoreGenerationTags, loopcontrols],
        )
        self._environment.filters["tojson"] = self._environment.budgeted_filter("tojson", Jinja2ChatFormatter.tojson)
        self._template = self._with_budget(budget or RenderBudget(), lambda: self._environment.from_string(source))

    def render(self, messages: list[dict], budget: RenderBudget, tools: list[dict] | None = None) -> str:
        """The prompt for ``messages`` (and ``tools``, OpenAI's function list), or a budget error."""

        def raise_exception(message: str):
            raise ValueError(message)

        variables = dict(
            messages=messages,
            eos_token=self.eos_token,
            bos_token=self.bos_token,
            raise_exception=raise_exception,
            add_generation_prompt=True,
            functions=None,
            function_call=None,
            tools=tools or None,
            tool_choice=None,
            strftime_now=self._strftime_now,
        )

        def work() -> str:
            parts: list[str] = []
            total = 0
            guard = self._environment.guard
            for piece in self._template.generate(**variables):
                total += len(piece)
                guard.size(total)
                parts.append(piece)
            return "".join(parts)

        return self._with_budget(budget, work)

    def _with_budget(self, budget: RenderBudget, work: Callable[[], Any]) -> Any:
        guard = _Guard(budget)
        self._environment.guard = guard
        try:
            return guard.run(work)
        finally:
            self._environment.guard = None


__all__ = [
    "DEFAULT_MAX_CHARS",
    "DEFAULT_SECONDS",
    "BudgetedEnvironment",
    "RenderBudget",
    "SandboxedChatTemplate",
    "TemplateBudgetError",
    "TemplateCancelled",
    "TemplateTooLarge",
    "TemplateTooSlow",
]
