"""The scheduler on real llama.cpp hosts: fairness, the queue bound, cancel at every stage, crashes.

Order is asserted on the scheduler's timeline (``started_seq``/``ended_seq``),
never on time. Where a test needs work to be waiting, the first ticket's
host holds its load on an Event (a real EngineHost that starts loading
when the test lets it): the order of what follows then depends on the
scheduling policy alone.
"""

from __future__ import annotations

import os
import threading

import pytest

from engines.api import ChatMessage, FinishedEvent, ProgressEvent, SamplingParams, TextLoadSpec, TextRequest, TokenEvent
from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.host import EngineHost
from engines.scheduler import QueueFull, Scheduler, Work

pytest.importorskip("llama_cpp")


class GatedHost(EngineHost):
    """A real engine host whose loads wait until the test opens the gate."""

    def __init__(self, gate: threading.Event, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate

    def load(self, *args, **kwargs):
        self._gate.wait()
        return super().load(*args, **kwargs)


def gated_factory(gate: threading.Event):
    return lambda engine, spec, log_path, role: GatedHost(gate, log_path, role=role)


@pytest.fixture
def make_scheduler(tmp_path):
    made = []

    def make(**kwargs) -> Scheduler:
        kwargs.setdefault("idle_unload_s", None)
        scheduler = Scheduler(tmp_path / "logs", **kwargs)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.shutdown()


def short(seed: int = 1, tokens: int = 4) -> TextRequest:
    return TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=tokens, seed=seed))


def long_request(seed: int = 1) -> TextRequest:
    return TextRequest((ChatMessage("user", "tell me everything"),),
                       SamplingParams(max_tokens=2000, temperature=1.0, min_p=0.0, seed=seed))


def finished(ticket):
    events = list(ticket.events())
    assert isinstance(events[-1], FinishedEvent), events[-1]
    return events


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_two_clients_interleave_fairly(make_scheduler, tiny_gguf):
    gate = threading.Event()
    scheduler = make_scheduler(host_factory=gated_factory(gate))
    spec = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
    a = [scheduler.submit(Work("llama_cpp", spec, short(seed=i)), "editor") for i in range(3)]
    b = [scheduler.submit(Work("llama_cpp", spec, short(seed=i)), "notebook") for i in range(3)]
    assert a[0].state == "running" and all(t.state == "queued" for t in a[1:] + b)
    gate.set()
    for ticket in a + b:
        finished(ticket)
    order = [t for t in sorted(a + b, key=lambda t: t.started_seq)]
    assert [t.client for t in order] == ["editor", "notebook"] * 3
    assert order == [a[0], b[0], a[1], b[1], a[2], b[2]]
    for earlier, later in zip(order, order[1:]):  # one model: one request at a time
        assert earlier.ended_seq < later.started_seq
    assert len(scheduler.snapshot().loaded) == 1  # both clients used the one loaded model


def test_a_waiting_ticket_says_so_first(make_scheduler, tiny_gguf):
    gate = threading.Event()
    scheduler = make_scheduler(host_factory=gated_factory(gate))
    spec = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
    first = scheduler.submit(Work("llama_cpp", spec, short()), "a")
    second = scheduler.submit(Work("llama_cpp", spec, short()), "b")
    gate.set()
    events = finished(second)
    assert events[0] == ProgressEvent("queue", "Waiting for its turn: 1 request ahead of this one.")
    assert not any(isinstance(e, ProgressEvent) and e.stage == "queue" for e in finished(first))


def test_the_queue_bound_gives_queue_full(make_scheduler, tiny_gguf):
    gate = threading.Event()
    scheduler = make_scheduler(host_factory=gated_factory(gate), max_queue=2)
    spec = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
    running = scheduler.submit(Work("llama_cpp", spec, short()), "a")
    waiting = [scheduler.submit(Work("llama_cpp", spec, short()), client) for client in ("b", "c")]
    with pytest.raises(QueueFull) as full:
        scheduler.submit(Work("llama_cpp", spec, short()), "d")
    # Nothing has finished yet: 5 s a job, 2 waiting + 1 running, one CPU lane.
    assert full.value.kind == ErrorKind.BUSY and full.value.retry_after_s == 15
    assert full.value.message == "The engine queue is full (2 requests waiting); try again in about 15 s."
    assert [q.client for q in scheduler.snapshot().queued] == ["b", "c"]
    interactive = scheduler.submit(Work("llama_cpp", spec, short()), "chat page", bounded=False)
    gate.set()
    for ticket in [running, *waiting, interactive]:
        finished(ticket)
    finished(scheduler.submit(Work("llama_cpp", spec, short()), "d"))  # room again


def test_cancel_while_queued_frees_its_place(make_scheduler, tiny_gguf):
    gate = threading.Event()
    scheduler = make_scheduler(host_factory=gated_factory(gate), max_queue=1)
    spec = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
    running = scheduler.submit(Work("llama_cpp", spec, short()), "a")
    queued = scheduler.submit(Work("llama_cpp", spec, short()), "b")
    queued.cancel()
    events = []
    with pytest.raises(EngineError) as stopped:
        for event in queued.events():
            events.append(event)
    assert stopped.value.kind == ErrorKind.CANCELLED and stopped.value.message == "Stopped while waiting for its turn."
    assert events == [ProgressEvent("queue", "Waiting for its turn: 1 request ahead of this one.")]
    assert queued.started_seq is None  # it never ran
    again = scheduler.submit(Work("llama_cpp", spec, short()), "b")  # its place in the queue is free
    gate.set()
    finished(running)
    finished(again)


@pytest.mark.slow
def test_cancel_while_loading_stops_the_load(make_scheduler, gemma_path):
    scheduler = make_scheduler()
    spec = TextLoadSpec(str(gemma_path), context_length=1024)
    ticket = scheduler.submit(Work("llama_cpp", spec, short()), "a")
    with pytest.raises(EngineError) as stopped:
        for event in ticket.events():
            if isinstance(event, ProgressEvent) and event.stage == "load":
                ticket.cancel()
    assert stopped.value.kind == ErrorKind.CANCELLED
    assert stopped.value.message == f"Loading {gemma_path.name} was stopped."
    finished(scheduler.submit(Work("llama_cpp", spec, short()), "a"))  # the next one loads it


@pytest.mark.slow
def test_cancel_while_generating_stops_the_reply_and_frees_the_model(make_scheduler, gemma_path):
    scheduler = make_scheduler()
    spec = TextLoadSpec(str(gemma_path), context_length=1024)
    ticket = scheduler.submit(Work("llama_cpp", spec, long_request()), "a")
    tokens, result = [], None
    for event in ticket.events():
        if isinstance(event, TokenEvent):
            tokens.append(event.text)
            if len(tokens) == 3:
                threading.Thread(target=ticket.cancel).start()  # from another thread, as a server's would
        elif isinstance(event, FinishedEvent):
            result = event.result
    assert result.finish_reason == "cancelled" and result.text == "".join(tokens)
    assert 3 <= result.completion_tokens < 2000
    pid = scheduler.snapshot().loaded[0].pid
    next_one = finished(scheduler.submit(Work("llama_cpp", spec, short()), "b"))
    assert next_one[-1].result.finish_reason != "cancelled"
    assert scheduler.snapshot().loaded[0].pid == pid  # still loaded: only the reply stopped


@pytest.mark.slow
def test_an_abandoned_iterator_cancels_its_work(make_scheduler, gemma_path):
    scheduler = make_scheduler()
    spec = TextLoadSpec(str(gemma_path), context_length=1024)
    ticket = scheduler.submit(Work("llama_cpp", spec, long_request()), "gone")
    events = ticket.events()
    for event in events:
        if isinstance(event, TokenEvent):
            break
    events.close()  # an HTTP client that disconnected
    after = scheduler.submit(Work("llama_cpp", spec, short()), "next")
    finished(after)
    assert ticket.cancelled and ticket.ended_seq < after.started_seq


@pytest.mark.slow
def test_a_crash_of_one_host_leaves_the_others_running(make_scheduler, tiny_gguf, gemma_path):
    scheduler = make_scheduler()
    doomed = TextLoadSpec(str(gemma_path), context_length=1024)
    other = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
    finished(scheduler.submit(Work("llama_cpp", other, short()), "b"))
    other_pid = scheduler.pid_of(("llama_cpp", other))
    ticket = scheduler.submit(Work("llama_cpp", doomed, long_request()), "a")
    with pytest.raises(EngineCrashed) as crashed:
        for event in ticket.events():
            if isinstance(event, TokenEvent):
                scheduler.kill(("llama_cpp", doomed))
    assert crashed.value.kind == ErrorKind.CRASHED and "stopped unexpectedly" in crashed.value.message
    assert _alive(other_pid) and scheduler.pid_of(("llama_cpp", other)) == other_pid
    finished(scheduler.submit(Work("llama_cpp", other, short()), "b"))  # the other model never noticed
    finished(scheduler.submit(Work("llama_cpp", doomed, short()), "a"))  # a fresh host for the crashed one
    assert len(scheduler.snapshot().loaded) == 2


def test_bad_work_is_refused_in_words(make_scheduler, tmp_path):
    scheduler = make_scheduler()
    with pytest.raises(EngineError) as unhashable:
        scheduler.submit(Work("llama_cpp", {"model_path": "x"}, short()), "a")
    assert unhashable.value.message == ("The load spec for llama_cpp cannot be used as a key (it must be hashable).")
    missing = tmp_path / "missing.gguf"
    with pytest.raises(EngineError) as bad_file:  # the engine's own words, through the ticket
        finished(scheduler.submit(Work("llama_cpp", TextLoadSpec(str(missing)), short()), "a"))
    assert bad_file.value.kind == ErrorKind.MODEL_FILE
    assert bad_file.value.message == f"The model file does not exist: {missing}"
    # A failed load leaves no model behind: its host is closing (or closed) already.
    assert [m.state for m in scheduler.snapshot().loaded] in ([], ["stopping"])
    assert scheduler.model_info(("llama_cpp", TextLoadSpec(str(missing)))) is None


def test_after_shutdown_nothing_is_accepted(make_scheduler, tiny_gguf):
    scheduler = make_scheduler()
    spec = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
    finished(scheduler.submit(Work("llama_cpp", spec, short()), "a"))
    pid = scheduler.pid_of(("llama_cpp", spec))
    scheduler.shutdown()
    assert not _alive(pid)
    with pytest.raises(EngineError) as closed:
        scheduler.submit(Work("llama_cpp", spec, short()), "a")
    assert closed.value.kind == ErrorKind.UNAVAILABLE and closed.value.message == "Atelier is closing."
