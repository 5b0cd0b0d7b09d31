"""CPU lanes: a chat reply and an image take turns on a small machine; GPU and remote work take no lane.

Real engines: llama.cpp on tiny GGUFs and the tiny Stable Diffusion
pipeline (torch, in its own engine host). Overlap is read from the
scheduler's timeline (``started_seq``/``ended_seq``), never from clocks.
A test that needs work to be waiting holds a host's load on an Event.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import pytest

from engines.api import ChatMessage, FinishedEvent, ProgressEvent, SamplingParams, TextLoadSpec, TextRequest
from engines.host import EngineHost
from engines.scheduler import Scheduler, Work
from engines.scheduler.lanes import cpu_lane_count, threads_per_lane
from tests.fixtures.openai_stub import openai_stub  # noqa: F401  (fixture)
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)

pytest.importorskip("llama_cpp")


class GatedHost(EngineHost):
    """A real engine host whose load waits for its model's gate (no gate: loads at once)."""

    gates: dict[str, threading.Event] = {}

    def load(self, engine, spec, on_event=None):
        gate = self.gates.get(spec.model_path)
        if gate is not None:
            gate.wait()
        return super().load(engine, spec, on_event)


def factory(engine, spec, log_path, role):
    if engine == "remote":
        from engines.remote import RemoteHost

        return RemoteHost()
    return GatedHost(log_path, role=role)


@pytest.fixture
def schedulers(tmp_path):
    made = []

    def make(**kwargs) -> Scheduler:
        scheduler = Scheduler(tmp_path / "logs", idle_unload_s=None, host_factory=factory, **kwargs)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.shutdown()
    GatedHost.gates.clear()


def chat(seed: int = 1) -> TextRequest:
    return TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=8, seed=seed))


def image_work(folder):
    from engines.diffusion.types import ImageLoadSpec, ImageRequest

    request = ImageRequest(prompt="a lighthouse", width=64, height=64, steps=2, seed=7, preview_every=0)
    return Work("diffusers", ImageLoadSpec(str(folder), backend="torch", dtype="fp32"), request)


def finished(ticket):
    events = list(ticket.events())
    assert isinstance(events[-1], FinishedEvent), events[-1]
    return events


def overlap(a, b) -> bool:
    return a.started_seq < b.ended_seq and b.started_seq < a.ended_seq


def wait_until_ended(scheduler, ticket) -> None:
    """Until the scheduler has booked the end (and dispatched what it frees); the stream ends a moment earlier."""
    while ticket.ended_seq is None:
        time.sleep(0.01)
    scheduler.snapshot()  # takes the lock: the dispatch that followed the end is over


def test_the_lane_count_follows_the_cores():
    assert [cpu_lane_count(n) for n in (1, 2, 4, 8, 15)] == [1, 1, 1, 1, 1]
    assert [cpu_lane_count(n) for n in (16, 24, 32, 64, 256)] == [2, 3, 4, 4, 4]


@pytest.mark.slow
def test_a_chat_reply_and_an_image_take_turns_on_one_lane(schedulers, tiny_gguf, tiny_sd):  # noqa: F811
    scheduler = schedulers(cpu_lanes=1)
    text = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
    GatedHost.gates[str(tiny_gguf)] = gate = threading.Event()
    reply = scheduler.submit(Work("llama_cpp", text, chat()), "chat page")
    picture = scheduler.submit(image_work(tiny_sd), "images page")
    assert (reply.state, picture.state) == ("running", "queued")  # the image waits for the lane
    gate.set()
    finished(reply)
    image_events = finished(picture)
    assert image_events[0] == ProgressEvent("queue", "Waiting for its turn: 1 request ahead of this one.")
    assert len(image_events[-1].result.images) == 1
    assert picture.started_seq > reply.ended_seq

    # The other way round: an image holds the lane, the next reply waits for it. Both models stay loaded.
    picture = scheduler.submit(image_work(tiny_sd), "images page")
    reply = scheduler.submit(Work("llama_cpp", text, chat(seed=2)), "chat page")
    assert reply.state == "queued"
    finished(reply)
    finished(picture)
    assert reply.started_seq > picture.ended_seq
    assert sorted(m.engine for m in scheduler.snapshot().loaded) == ["diffusers", "llama_cpp"]
    starts = [entry for entry in scheduler.timeline()]
    running = 0
    for _seq, what, _ticket, _client, _engine in starts:  # never two at once, across the whole run
        running += 1 if what == "start" else -1
        assert running <= 1


@pytest.mark.slow
def test_with_two_lanes_text_runs_side_by_side_and_an_image_runs_alone(schedulers, tmp_path, tiny_sd):  # noqa: F811
    scheduler = schedulers(cpu_lanes=2)
    a, b, c = (write_tiny_llama_gguf(tmp_path / f"{name}.gguf", seed=n) for n, name in enumerate("abc"))
    gate_a = GatedHost.gates[str(a)] = threading.Event()
    gate_b = GatedHost.gates[str(b)] = threading.Event()
    first = scheduler.submit(Work("llama_cpp", TextLoadSpec(str(a), context_length=256), chat()), "one")
    second = scheduler.submit(Work("llama_cpp", TextLoadSpec(str(b), context_length=256), chat()), "two")
    assert (first.state, second.state) == ("running", "running")  # one lane each
    picture = scheduler.submit(image_work(tiny_sd), "three")
    third = scheduler.submit(Work("llama_cpp", TextLoadSpec(str(c), context_length=256), chat()), "four")
    assert (picture.state, third.state) == ("queued", "queued")
    gate_a.set()
    finished(first)
    wait_until_ended(scheduler, first)
    # A lane is free, but the image (first in line) needs both: the later reply may not take it.
    assert (picture.state, third.state) == ("queued", "queued")
    gate_b.set()
    finished(second)
    finished(picture)
    finished(third)
    assert overlap(first, second)
    assert picture.started_seq > second.ended_seq and third.started_seq > picture.ended_seq
    assert second.model_info.threads == threads_per_lane(2)  # each text host gets its share of the cores


@pytest.mark.slow
def test_remote_work_takes_no_lane(schedulers, tiny_gguf, openai_stub):  # noqa: F811
    from engines.remote import RemoteSpec

    scheduler = schedulers(cpu_lanes=1)
    GatedHost.gates[str(tiny_gguf)] = gate = threading.Event()
    tiny = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
    local = scheduler.submit(Work("llama_cpp", tiny, chat()), "chat")
    remote = scheduler.submit(Work("remote", RemoteSpec("stub", openai_stub.base_url, "stub"), chat()), "server")
    assert (local.state, remote.state) == ("running", "running")  # the lane is held, the remote one runs anyway
    assert finished(remote)[-1].result.text == "Hello, world!"
    gate.set()
    finished(local)
    assert overlap(local, remote)
    (model,) = [m for m in scheduler.snapshot().loaded if m.engine == "remote"]
    assert model.pid is None and model.name == "stub"  # no process of its own


@pytest.mark.slow
def test_work_on_a_gpu_takes_no_lane(schedulers, tiny_gguf):
    """No GPU here: a stand-in image host that reports a CUDA device (the real torch engine's info, as on a GPU)."""
    from dataclasses import replace

    from engines.diffusion.types import ImageLoadSpec, ImageRequest
    from tests.fixtures.fake_image_host import FakeImageHost

    class OnGpu(FakeImageHost):
        def load(self, engine, spec, on_event=None):
            self.model_info = replace(super().load(engine, spec, on_event), device="cuda")
            return self.model_info

    def hosts(engine, spec, log_path, role):
        return OnGpu() if engine == "diffusers" else GatedHost(log_path, role=role)

    scheduler = Scheduler(Path(tempfile.mkdtemp()) / "logs", idle_unload_s=None, host_factory=hosts, cpu_lanes=1)
    try:
        image = Work("diffusers", ImageLoadSpec("/models/sd-gpu"), ImageRequest("a boat", width=64, height=64, steps=2))
        finished(scheduler.submit(image, "images"))  # loaded (its load took the lane: nothing is known before)
        GatedHost.gates[str(tiny_gguf)] = gate = threading.Event()
        tiny = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
        text = scheduler.submit(Work("llama_cpp", tiny, chat()), "chat")
        picture = scheduler.submit(image, "images")
        assert (text.state, picture.state) == ("running", "running")
        finished(picture)
        gate.set()
        finished(text)
        assert overlap(text, picture)
        assert [m.gpu_resident for m in scheduler.snapshot().loaded if m.engine == "diffusers"] == [True]
    finally:
        gate.set()
        scheduler.shutdown()
