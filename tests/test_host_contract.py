"""One contract for every engine host the front ends drive: the real EngineHost and the tests' fakes.

The GUI's workers, the chat session and the CLI use a host through ``load``,
``generate``, ``cancel`` and ``close``, and read ``is_running`` and
``model_info``. The GUI tests run on :class:`FakeHost` and
:class:`FakeImageHost` instead of a real engine; a fake that drifted from the
real host would test the GUI against a host that does not exist. So the same
checks run on all of them, on the public interface only (the host's insides,
its protocol included, are free to change): the methods and their
signatures; from load to one ``FinishedEvent``, last; Stop, which ends the
request in flight and never the next one; errors as EngineError kinds with
the engine's words; a crash mid-request; close.

The real hosts run the demo model (a tiny GGUF streams a whole reply before a
Stop can reach it) and the tiny diffusion pipeline, each in its own process.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from engines.api import (
    ChatMessage,
    FinishedEvent,
    NoticeEvent,
    ProgressEvent,
    SamplingParams,
    TextLoadSpec,
    TextRequest,
    TextResult,
    TokenEvent,
)
from engines.diffusion.types import ImageDoneEvent, ImageLoadSpec, ImageRequest, StepEvent
from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.host import EngineHost
from tests.fixtures.fake_host import FakeHost
from tests.fixtures.fake_image_host import FakeImageHost
from tests.fixtures.gemma import gemma_path  # noqa: F401  (fixture)
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (fixture)

METHODS = ("load", "generate", "cancel", "close")  # what the front ends call
PROPERTIES = ("is_running",)
KILLED = "The engine stopped unexpectedly: it was killed, most likely because the system ran out of memory."
NOT_LOADED = "No model is loaded."


def _parameters(function) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults: annotations are documentation, what a caller relies on is these."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("fake", [FakeHost, FakeImageHost])
def test_a_fake_has_the_engine_hosts_methods_with_the_same_signatures(fake):
    for name in METHODS:
        assert _parameters(getattr(fake, name)) == _parameters(getattr(EngineHost, name)), name
    for name in PROPERTIES:
        assert isinstance(getattr(EngineHost, name), property) and isinstance(getattr(fake, name), property), name
    assert fake().model_info is None  # like EngineHost's before a load
    public = {name for name in dir(fake) if not name.startswith("_") and callable(getattr(fake, name))}
    assert public <= set(dir(EngineHost)), f"the fake offers what the real host does not: {public - set(dir(EngineHost))}"


# ---- the behaviour, the same scenario on every host -----------------------------------------------------------


@dataclass
class Case:
    host: Any
    load: tuple  # (engine, spec)
    request: Any  # a short request
    long_request: Any  # long enough to be stopped, or killed, in the middle
    progress: type  # the event after which Stop and the crash come
    bad_request: Any
    bad_message: str
    arm_crash: Callable[[Any], None]  # before the request: a fake is told to die at its second step or word
    crash_now: Callable[[Any], None]  # at the first progress event: the real host is killed, as the OOM killer would


def _text(host, spec, kill) -> Case:
    chat = (ChatMessage("user", "Tell me about lighthouses."),)
    return Case(
        host, ("llama_cpp", spec),
        TextRequest(chat, SamplingParams(max_tokens=4, seed=1)),
        TextRequest(chat, SamplingParams(max_tokens=2000, temperature=1.0, min_p=0.0, seed=1)),
        TokenEvent,
        TextRequest(chat, SamplingParams(temperature=9.0)), "Temperature must be between 0 and 5.",
        arm_crash=(lambda h: None) if kill else (lambda h: setattr(h, "crash_after", 1)),
        crash_now=(lambda h: h.kill()) if kill else (lambda h: None),
    )


def _image(host, spec, kill) -> Case:
    def request(**overrides) -> ImageRequest:
        return ImageRequest(**{**dict(prompt="a lighthouse", width=64, height=64, steps=3, seed=40), **overrides})

    return Case(
        host, ("diffusers", spec), request(), request(steps=10, batch_count=3), StepEvent,
        request(width=65), "Cannot make this image: width must be a multiple of 8 (got 65; try 64).",
        arm_crash=(lambda h: None) if kill else (lambda h: setattr(h, "crash_at_step", 2)),
        crash_now=(lambda h: h.kill()) if kill else (lambda h: None),
    )


@pytest.fixture(params=[
    "fake-text",
    "fake-image",
    pytest.param("engine-host-text", marks=pytest.mark.slow),
    pytest.param("engine-host-image", marks=pytest.mark.slow),
])
def case(request, tmp_path):
    kind = request.param
    if kind == "fake-text":
        made = _text(FakeHost(delay=0.0), TextLoadSpec("/models/fake.gguf", context_length=2048), kill=False)
    elif kind == "fake-image":
        made = _image(FakeImageHost(delay=0.0), ImageLoadSpec("/models/fake-sd"), kill=False)
    elif kind == "engine-host-text":
        pytest.importorskip("llama_cpp")
        gemma = request.getfixturevalue("gemma_path")
        made = _text(EngineHost(tmp_path / "host.log"), TextLoadSpec(str(gemma), context_length=2048), kill=True)
    else:
        pytest.importorskip("diffusers")
        sd = request.getfixturevalue("tiny_sd")
        made = _image(EngineHost(tmp_path / "image.log", role="image"),
                      ImageLoadSpec(str(sd), backend="torch", dtype="fp32"), kill=True)
    yield made
    made.host.close()


def result_of(events: list) -> Any:
    """The request's result, once the stream has kept its order: its events, then one FinishedEvent, last."""
    assert events and isinstance(events[-1], FinishedEvent), events[-3:]
    assert not any(isinstance(e, FinishedEvent) for e in events[:-1])
    result = events[-1].result
    if isinstance(result, TextResult):
        assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == result.text  # the reply as streamed
    else:  # each image is reported as it is done, in order, and the result holds exactly those
        done = [e for e in events if isinstance(e, ImageDoneEvent)]
        assert [d.image_index for d in done] == list(range(len(done)))
        assert result.images == tuple(d.image for d in done)
        steps = [(e.image_index, e.step) for e in events if isinstance(e, StepEvent)]
        assert steps == sorted(steps)
    return result


def cancelled(result) -> bool:
    return result.finish_reason == "cancelled" if isinstance(result, TextResult) else result.cancelled


def refused(host, request) -> EngineError:
    with pytest.raises(EngineError) as info:
        list(host.generate(request))
    return info.value


def test_a_host_keeps_the_contract_from_load_to_close(case):
    host = case.host

    # Nothing loaded: a request is refused in words.
    error = refused(host, case.request)
    assert (error.kind, error.message) == (ErrorKind.BAD_INPUT, NOT_LOADED)
    assert not host.is_running and host.model_info is None

    # Load: the model's info, kept as model_info; only progress and notices on the way; the loaded model is reused.
    seen: list = []
    info = host.load(*case.load, on_event=seen.append)
    assert host.is_running and host.model_info is info
    assert all(isinstance(event, (ProgressEvent, NoticeEvent)) for event in seen), seen
    assert host.load(*case.load) is info

    # A request: its events in order, then one FinishedEvent.
    assert not cancelled(result_of(list(host.generate(case.request))))

    # Stop in the middle: the request ends, cancelled, with what it had; the model stays loaded.
    events: list = []
    for event in host.generate(case.long_request):
        events.append(event)
        if isinstance(event, case.progress) and sum(isinstance(e, case.progress) for e in events) == 1:
            host.cancel()
    assert cancelled(result_of(events))
    assert host.is_running and host.model_info is info
    # ... and never reaches the next request.
    assert not cancelled(result_of(list(host.generate(case.request))))

    # A bad request: BAD_INPUT, every problem in the engine's words; the host stays up.
    error = refused(host, case.bad_request)
    assert (error.kind, error.message) == (ErrorKind.BAD_INPUT, case.bad_message)
    assert host.is_running and host.model_info is info

    # A crash in the middle: EngineCrashed, kind "crashed", why in words; the model is gone.
    case.arm_crash(host)
    with pytest.raises(EngineCrashed) as crash:
        killed = False
        for event in host.generate(case.long_request):
            if isinstance(event, case.progress) and not killed:
                killed = True
                case.crash_now(host)
    assert crash.value.kind == ErrorKind.CRASHED
    assert crash.value.message.startswith(KILLED)  # the real host may add the last line of its log
    assert not host.is_running and host.model_info is None

    # The next load starts afresh, and works.
    info = host.load(*case.load)
    assert host.is_running and host.model_info is info
    assert not cancelled(result_of(list(host.generate(case.request))))

    # Close gives everything back; twice is harmless; a request after it is refused as before a load.
    host.close()
    assert not host.is_running and host.model_info is None
    host.close()
    error = refused(host, case.request)
    assert (error.kind, error.message) == (ErrorKind.BAD_INPUT, NOT_LOADED)
