"""Chat templates under a time and size budget (defect D8): bombs end, Stop reaches them, real ones are unchanged."""

from __future__ import annotations

import sys
import threading

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engines.api import ChatMessage, NoticeEvent, SamplingParams, TextLoadSpec, TextRequest
from engines.errors import EngineError, ErrorKind
from tests.fixtures.chat_templates import CHATML, GEMMA3

pytest.importorskip("llama_cpp")
from engines.llama.engine import LlamaCppEngine  # noqa: E402
from engines.llama.template_sandbox import (  # noqa: E402
    RenderBudget,
    SandboxedChatTemplate,
    TemplateCancelled,
    TemplateTooLarge,
    TemplateTooSlow,
)

CPU_BOMB = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
# The loops hide their range from any per-call check: only the clock can stop them.
CPU_BOMB_ONE_RANGE = "{% set r = range(100000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}"
DOUBLING_BOMB = ("{% set ns = namespace(s='x' * 1000) %}{% for i in range(100) %}"
                 "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}")
APPENDING_BOMB = ("{% set ns = namespace(s='x' * 100000) %}{% for i in range(100000) %}"
                  "{% set ns.s = ns.s ~ ns.s[:100000] %}{% endfor %}{{ ns.s }}")
BIG_MULTIPLICATION = "{{ 'x' * 100000 * 100000 }}"
MESSAGES = [{"role": "user", "content": "hi"}]
SHORT = RenderBudget(seconds=0.3)


def conversation(turns: int) -> list[dict]:
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(turns):
        messages += [{"role": "user", "content": f"  question {i}\n"}, {"role": "assistant", "content": f"answer {i}"}]
    return messages + [{"role": "user", "content": "last one"}]


def jinja_render(source: str, messages: list[dict]) -> str:
    """The same template through Jinja's plain sandbox, as llama-cpp-python renders it."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message):
        raise ValueError(message)

    return env.from_string(source).render(messages=messages, bos_token="<bos>", eos_token="<eos>",
                                          add_generation_prompt=True, raise_exception=raise_exception)


@pytest.mark.parametrize("source", [GEMMA3, CHATML], ids=["gemma3", "chatml"])
@pytest.mark.parametrize("turns", [0, 1, 12])
def test_real_templates_render_exactly_as_jinja_does(source, turns):
    template = SandboxedChatTemplate(source, "<eos>", "<bos>")
    messages = conversation(turns)
    assert template.render(messages, RenderBudget()) == jinja_render(source, messages)


def test_a_template_that_raises_still_raises_its_own_error():
    template = SandboxedChatTemplate(GEMMA3, "<eos>", "<bos>")
    with pytest.raises(ValueError, match="Conversation roles must alternate"):
        template.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], RenderBudget())


@pytest.mark.parametrize("source", [CPU_BOMB, CPU_BOMB_ONE_RANGE], ids=["nested-ranges", "one-range"])
def test_a_cpu_bomb_ends_at_its_deadline(source):
    template = SandboxedChatTemplate(source, "", "")
    with pytest.raises(TemplateTooSlow) as info:
        template.render(MESSAGES, SHORT)
    assert info.value.reason == "took too long to render"
    # the thread is left as it was: the next render (of a real template) works
    assert SandboxedChatTemplate(CHATML, "", "").render(MESSAGES, RenderBudget()) == jinja_render(CHATML, MESSAGES)


@pytest.mark.parametrize("source", [DOUBLING_BOMB, APPENDING_BOMB, BIG_MULTIPLICATION, "{{ 10 ** (10 ** 10) }}",
                                    "{{ 'x' | center(10000000000) }}", "{{ 'x'.ljust(10000000000) }}",
                                    "{{ '{:>9999999999}'.format(1) }}", "{{ '%09999999999d' % 1 }}",
                                    "{{ ('x' * 1000000) | replace('', 'yyyyyyyyyyyyyyyyyyyy') }}",
                                    "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = [ns.l, ns.l] %}"
                                    "{% endfor %}{{ ns.l }}"],
                         ids=["doubling", "appending", "multiplication", "power", "center", "ljust", "format",
                              "printf", "replace", "nested-list"])
def test_a_memory_bomb_is_refused_before_it_allocates(source):
    before = _peak_rss_bytes()
    with pytest.raises(TemplateTooLarge) as info:  # the size limit must stop it, not the clock (no deadline here:
        SandboxedChatTemplate(source, "", "").render(MESSAGES, RenderBudget(seconds=3600))  # a loaded CI is slow)
    assert info.value.reason == "made a text too large to render"
    assert _peak_rss_bytes() - before < 512 * 2**20  # the 10 GB were never asked for


def test_the_multiplication_is_refused_at_compile_time_too():
    """Jinja folds constant expressions when it compiles: the sandbox must refuse there as well."""
    before = _peak_rss_bytes()
    with pytest.raises(TemplateTooLarge):
        SandboxedChatTemplate("{{ 'x' * 100000 * 100000 }}{{ messages }}", "", "").render(MESSAGES, RenderBudget())
    assert _peak_rss_bytes() - before < 512 * 2**20


class SetOnTheWatchersThirdLook:
    """A cancel flag that turns on when the template watcher has looked at it three times: no clock involved."""

    def __init__(self) -> None:
        self.looks = 0

    def is_set(self) -> bool:
        if threading.current_thread().name == "template-watcher":
            self.looks += 1
        return self.looks >= 3


def test_cancel_reaches_a_render_that_spins():
    flag = SetOnTheWatchersThirdLook()
    template = SandboxedChatTemplate(CPU_BOMB, "", "")
    with pytest.raises(TemplateCancelled):
        template.render(MESSAGES, RenderBudget(seconds=3600, cancel=flag))
    assert flag.looks >= 3


def test_renders_on_two_threads_are_budgeted_apart():
    results: dict[str, object] = {}

    def bomb():
        try:
            SandboxedChatTemplate(CPU_BOMB, "", "").render(MESSAGES, SHORT)
        except TemplateTooSlow as exc:
            results["bomb"] = exc

    thread = threading.Thread(target=bomb)
    thread.start()
    real = SandboxedChatTemplate(GEMMA3, "<eos>", "<bos>")
    while thread.is_alive():
        assert real.render(conversation(3), RenderBudget()) == jinja_render(GEMMA3, conversation(3))
    thread.join()
    assert isinstance(results["bomb"], TemplateTooSlow)


# ---- the engine: a bomb in a model file falls back and says why -------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("source, why", [
    (CPU_BOMB, "took too long to render"),
    (DOUBLING_BOMB, "made a text too large to render"),
    (BIG_MULTIPLICATION, "made a text too large to render"),
], ids=["cpu", "doubling", "multiplication"])
def test_a_model_with_a_bomb_template_loads_with_the_fallback_and_says_why(tmp_path, source, why):
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    path = write_tiny_llama_gguf(tmp_path / "bomb.gguf", chat_template=source)
    engine = LlamaCppEngine()
    info = engine.load(TextLoadSpec(str(path), context_length=256, threads=1), lambda e: None)
    assert info.template_source == "fallback" and info.template == "llama-2"
    events = []
    request = TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=3, seed=1))
    result = engine.generate(request, events.append, threading.Event())
    notices = [e.message for e in events if isinstance(e, NoticeEvent)]
    assert notices == [f"The model's chat template {why}; using the llama-2 format."]
    assert result.template == "llama-2" and result.completion_tokens >= 1
    again = []
    engine.generate(request, again.append, threading.Event())
    assert not [e for e in again if isinstance(e, NoticeEvent)]  # said once
    engine.unload()


@pytest.mark.slow
def test_stop_during_a_bomb_template_ends_the_load_as_cancelled(tmp_path):
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    path = write_tiny_llama_gguf(tmp_path / "bomb.gguf", chat_template=CPU_BOMB)
    flag = SetOnTheWatchersThirdLook()
    engine = LlamaCppEngine()
    with pytest.raises(EngineError) as info:
        engine.load(TextLoadSpec(str(path), context_length=256), lambda e: None, flag)
    assert info.value.kind == ErrorKind.CANCELLED
    assert info.value.message == "Loading bomb.gguf was stopped."


def _peak_rss_bytes() -> int:
    """This process's peak memory so far (0 on Windows, which has no getrusage)."""
    try:
        import resource
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
