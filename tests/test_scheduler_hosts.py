"""ScheduledHost: the EngineHost look-alike the chat turn, the workers and the CLI drive, on real llama.cpp.

Clients share loaded models through it, a chat turn runs through it
unchanged, Stop reaches a reply that is still waiting for its turn, and
the window hands one scheduler to every page.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engines.api import ChatMessage, FinishedEvent, ProgressEvent, SamplingParams, TextLoadSpec, TextRequest
from engines.chat import ChatStore
from engines.chat.session import ChatTurn
from engines.errors import EngineError, ErrorKind
from engines.host import EngineHost
from engines.scheduler import ScheduledHost, Scheduler, Work

pytest.importorskip("llama_cpp")


class GatedHost(EngineHost):
    """A real engine host whose load waits until the test opens the gate."""

    def __init__(self, gate: threading.Event, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate

    def load(self, *args, **kwargs):
        self._gate.wait()
        return super().load(*args, **kwargs)


@pytest.fixture
def scheduler(tmp_path):
    made = Scheduler(tmp_path / "logs", idle_unload_s=None)
    yield made
    made.shutdown()


def short(seed: int = 1) -> TextRequest:
    return TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=4, seed=seed))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_two_clients_share_one_loaded_model(scheduler, tiny_gguf):
    spec = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
    chat_page, server = scheduler.host_for("chat page"), scheduler.host_for("server")
    loaded = []
    info = chat_page.load("llama_cpp", spec, loaded.append)
    assert any(isinstance(e, ProgressEvent) and e.stage == "load" for e in loaded)  # the engine's own progress
    pid = chat_page.pid
    assert server.load("llama_cpp", spec) is info and server.pid == pid  # no second load, no second process
    for host in (chat_page, server):
        events = list(host.generate(short()))
        assert isinstance(events[-1], FinishedEvent) and events[-1].result.completion_tokens > 0
    (model,) = scheduler.snapshot().loaded
    assert model.pid == pid and model.clients == ("chat page", "server")


def test_generate_before_load_is_refused_like_an_engine_host(scheduler):
    with pytest.raises(EngineError) as refused:
        list(scheduler.host_for("x").generate(short()))
    assert (refused.value.kind, refused.value.message) == (ErrorKind.BAD_INPUT, "No model is loaded.")


@pytest.mark.slow
def test_closing_a_host_unloads_its_model(scheduler, tiny_gguf):
    host = scheduler.host_for("chat page")
    spec = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
    host.load("llama_cpp", spec)
    pid = host.pid
    host.close()  # the Unload button: the memory goes back now
    assert not _alive(pid) and host.model_info is None and scheduler.snapshot().loaded == ()
    list(host.generate(short()))  # a later request loads it again, as an EngineHost would after a crash
    assert host.model_info is not None and host.pid != pid


@pytest.mark.slow
def test_a_chat_turn_runs_through_the_scheduler(scheduler, tiny_gguf, tmp_path):
    with ChatStore(tmp_path / "atelier.sqlite3") as store:
        chat = store.create_conversation()
        store.add_message(chat.id, "user", "Hello there")
        seen = []
        outcome = ChatTurn(store, scheduler.host_for("chat page"), chat.id,
                           TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)).run(seen.append)
        assert outcome.error is None and outcome.result.finish_reason in ("stop", "length")
        reply = store.messages(chat.id)[-1]
        assert (reply.role, reply.status, reply.content) == ("assistant", "complete", outcome.result.text)
        assert isinstance(seen[-1], FinishedEvent)


@pytest.mark.slow
def test_stop_while_the_reply_waits_its_turn_saves_it_cancelled(tmp_path, tiny_gguf):
    gate = threading.Event()
    scheduler = Scheduler(tmp_path / "logs", idle_unload_s=None,
                          host_factory=lambda engine, spec, log, role: GatedHost(gate, log, role=role))
    try:
        spec = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
        busy = scheduler.submit(Work("llama_cpp", spec, short()), "server")  # holds the model (loading)
        with ChatStore(tmp_path / "atelier.sqlite3") as store:
            chat = store.create_conversation()
            store.add_message(chat.id, "user", "Hello there")
            host = scheduler.host_for("chat page")
            seen = []

            def on_event(event) -> None:
                seen.append(event)
                if isinstance(event, ProgressEvent) and event.stage == "queue":
                    host.cancel()  # the Stop button, while the reply waits behind the server's request

            outcome = ChatTurn(store, host, chat.id, spec).run(on_event)
            assert seen == [ProgressEvent("queue", "Waiting for its turn: 1 request ahead of this one.")]
            assert outcome.error.kind == ErrorKind.CANCELLED
            assert outcome.error.message == "Stopped while waiting for its turn."
            reply = store.messages(chat.id)[-1]
            assert (reply.role, reply.status, reply.content) == ("assistant", "cancelled", "")
        gate.set()
        assert isinstance(list(busy.events())[-1], FinishedEvent)  # the other client never noticed
    finally:
        gate.set()
        scheduler.shutdown()


@pytest.mark.gui
def test_the_window_gives_every_page_the_same_scheduler(qtbot, atelier_home: Path):
    from desktop.main_window import MainWindow
    from engines.workspace import open_workspace

    window = MainWindow(open_workspace())
    qtbot.addWidget(window)
    chat_host, image_host = window.chat_controller.worker.host, window.images_page.worker.host
    assert isinstance(chat_host, ScheduledHost) and isinstance(image_host, ScheduledHost)
    assert chat_host._scheduler is window.scheduler and image_host._scheduler is window.scheduler
    assert (chat_host.client, image_host.client) == ("chat page", "images page")
    window.close()
    with pytest.raises(EngineError) as closed:  # closing the window closed the scheduler, last
        window.scheduler.submit(Work("llama_cpp", TextLoadSpec("x.gguf"), short()), "late")
    assert closed.value.message == "Atelier is closing."
