"""The scheduler's memory decisions on real llama.cpp hosts, with the free-memory figures injected.

The machine is simulated the way the kernel would report it: free memory
is a fixed amount minus what each live engine host was measured to hold,
so unloading a host really gives its memory back to the next judgement.
The verdicts themselves are the Models page's (engines.machine.fit).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import replace

import pytest

from engines.api import ChatMessage, FinishedEvent, ProgressEvent, SamplingParams, TextLoadSpec, TextRequest, TokenEvent
from engines.errors import EngineError, ErrorKind
from engines.machine.fit import ModelShape, Resources, estimate_text, judge_text_fit, ram_reserve
from engines.machine.hardware import MemoryInfo, probe
from engines.gguf.model_file import check_model_file
from engines.scheduler import Scheduler, Work
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

pytest.importorskip("llama_cpp")

TOTAL = 8 * 1024**3
RESERVE = ram_reserve(TOTAL)
CTX = 256


class Machine:
    """Free memory = reserve + ``spare`` − what the scheduler's live hosts measured."""

    def __init__(self, spare: int) -> None:
        self.spare = spare
        self.scheduler: Scheduler | None = None
        self.base = replace(probe(), gpus=[])  # no GPU: the same verdicts on every machine

    def __call__(self):
        used = sum(m.measured_bytes or 0 for m in self.scheduler.snapshot().loaded) if self.scheduler else 0
        return replace(self.base, memory=MemoryInfo(TOTAL, RESERVE + self.spare - used))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def schedulers(tmp_path):
    made = []

    def make(**kwargs) -> Scheduler:
        kwargs.setdefault("idle_unload_s", None)
        scheduler = Scheduler(tmp_path / "logs", **kwargs)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.shutdown()


def short() -> TextRequest:
    return TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=3, seed=1))


def need_of(path) -> int:
    return estimate_text(ModelShape.from_header(check_model_file(path)), CTX).total_bytes


def run(scheduler, spec, client="a", request=None):
    events = list(scheduler.submit(Work("llama_cpp", spec, request or short()), client).events())
    assert isinstance(events[-1], FinishedEvent)
    return events


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_a_model_that_cannot_fit_is_refused_with_the_verdicts_arithmetic(schedulers, tiny_gguf, tmp_path):
    machine = Machine(spare=10 * 1024**2)
    scheduler = schedulers(resources=machine)
    spec = TextLoadSpec(str(tiny_gguf), context_length=CTX, threads=1)
    with pytest.raises(EngineError) as refused:
        run(scheduler, spec)
    verdict = judge_text_fit(ModelShape.from_header(check_model_file(tiny_gguf)), CTX,
                             Resources.from_report(machine(), gpu_offload=False))
    assert not verdict.fits
    assert refused.value.kind == ErrorKind.MEMORY
    # In the words of llama.cpp's own preflight, so the GUI, the CLI and the server read the same sentence.
    assert refused.value.message == (f"Not enough memory for a context of 256 tokens: {verdict.explanation} "
                                     f"{' '.join(verdict.suggestions)}")
    assert scheduler.snapshot().loaded == ()  # refused before any process started
    assert not (tmp_path / "logs" / "engine-host-text.log").exists()


@pytest.mark.slow
def test_idle_models_are_unloaded_least_recently_used_first_to_make_room(schedulers, tmp_path):
    paths = [write_tiny_llama_gguf(tmp_path / f"{name}.gguf", seed=seed) for name, seed in (("a", 1), ("b", 2), ("c", 3))]
    a, b, c = (TextLoadSpec(str(p), context_length=CTX, threads=1) for p in paths)
    machine = Machine(spare=64 * 1024**3)
    ticks = itertools.count(1)
    scheduler = schedulers(resources=machine, clock=lambda: float(next(ticks)))
    machine.scheduler = scheduler
    run(scheduler, a)
    run(scheduler, b)
    loaded = {m.name: m for m in scheduler.snapshot().loaded}
    pid_a, pid_b = loaded["a.gguf"].pid, loaded["b.gguf"].pid
    measured_a, measured_b = loaded["a.gguf"].measured_bytes, loaded["b.gguf"].measured_bytes
    assert measured_a and measured_b  # the hosts' resident sets, read after loading
    # Room for c beside b, but not beside both: a (used first) must go, b stays.
    machine.spare = measured_b + need_of(paths[2]) + measured_a // 2
    events = run(scheduler, c, client="b")
    assert ProgressEvent("load", "Unloading a.gguf to make room for c.gguf…") in events
    assert sorted(m.name for m in scheduler.snapshot().loaded) == ["b.gguf", "c.gguf"]
    assert not _alive(pid_a) and _alive(pid_b)


@pytest.mark.slow
def test_when_busy_models_hold_the_memory_the_load_waits_for_them(schedulers, tiny_gguf, gemma_path):
    machine = Machine(spare=64 * 1024**3)
    scheduler = schedulers(resources=machine)
    machine.scheduler = scheduler
    busy = TextLoadSpec(str(gemma_path), context_length=1024)
    small = TextLoadSpec(str(tiny_gguf), context_length=CTX, threads=1)
    run(scheduler, busy)
    measured = scheduler.snapshot().loaded[0].measured_bytes
    machine.spare = measured + need_of(tiny_gguf) // 2  # the small one fits only once gemma is gone
    long = TextRequest((ChatMessage("user", "tell me everything"),),
                       SamplingParams(max_tokens=2000, temperature=1.0, min_p=0.0, seed=1))
    reply = scheduler.submit(Work("llama_cpp", busy, long), "chat")
    waiting = None
    for event in reply.events():
        if isinstance(event, TokenEvent) and waiting is None:
            waiting = scheduler.submit(Work("llama_cpp", small, short()), "server")
            assert waiting.state == "queued"  # not refused: the memory comes back once the reply is over
            reply.cancel()
    events = list(waiting.events())
    assert isinstance(events[-1], FinishedEvent)
    assert ProgressEvent("load", f"Unloading {gemma_path.name} to make room for tiny-llama.gguf…") in events
    assert waiting.started_seq > reply.ended_seq
    assert [m.name for m in scheduler.snapshot().loaded] == ["tiny-llama.gguf"]


@pytest.mark.slow
def test_an_idle_model_is_unloaded_after_the_idle_time(schedulers, tiny_gguf):
    clock = Clock()
    scheduler = schedulers(idle_unload_s=600.0, clock=clock)
    spec = TextLoadSpec(str(tiny_gguf), context_length=CTX, threads=1)
    run(scheduler, spec)
    pid = scheduler.pid_of(("llama_cpp", spec))
    clock.now += 599
    assert scheduler.unload_idle() == []
    assert scheduler.model_info(("llama_cpp", spec)) is not None
    clock.now += 1
    assert scheduler.unload_idle() == ["tiny-llama.gguf"]
    assert scheduler.model_info(("llama_cpp", spec)) is None  # being unloaded: nothing new goes to it
    run(scheduler, spec)  # loads it again, in a new process, once the old one is gone
    assert not _alive(pid) and scheduler.pid_of(("llama_cpp", spec)) not in (None, pid)


@pytest.mark.slow
def test_a_busy_model_is_never_unloaded_for_being_idle(schedulers, gemma_path):
    clock = Clock()
    scheduler = schedulers(idle_unload_s=60.0, clock=clock)
    spec = TextLoadSpec(str(gemma_path), context_length=1024)
    long = TextRequest((ChatMessage("user", "tell me everything"),),
                       SamplingParams(max_tokens=2000, temperature=1.0, min_p=0.0, seed=1))
    ticket = scheduler.submit(Work("llama_cpp", spec, long), "a")
    result = None
    for event in ticket.events():
        if isinstance(event, TokenEvent) and ticket.state == "running" and not ticket.cancelled:
            clock.now += 3600
            assert scheduler.unload_idle() == []  # it has been loaded for an hour, but it is working
            ticket.cancel()
        elif isinstance(event, FinishedEvent):
            result = event.result
    assert result.finish_reason == "cancelled"
    assert scheduler.model_info(("llama_cpp", spec)) is not None


@pytest.mark.slow
def test_measured_memory_is_reported_beside_the_estimate(schedulers, tiny_gguf):
    scheduler = schedulers()
    spec = TextLoadSpec(str(tiny_gguf), context_length=CTX, threads=1)
    run(scheduler, spec)
    (model,) = scheduler.snapshot().loaded
    assert model.state == "idle" and model.clients == ("a",)
    assert model.estimated_bytes == need_of(tiny_gguf)
    assert model.measured_bytes > model.estimated_bytes // 2  # the host's resident set, same order as the estimate
    assert model.info.path == str(tiny_gguf) and os.path.basename(model.info.path) == model.name
