"""The engine-host protocol: typed msgspec frames, a closed list of types, a Hello with the version.

Crafted frames go to a real host process over its real connection (a
pickle whose unpickling would leave a file behind, a type the protocol does
not carry, a field of the wrong type, an unknown message): each is refused
with the exact reason, the payload never runs, and the host keeps serving.
A hostile or outdated host, played by a stand-in "Python" that speaks the
transport but not the protocol, gets one sentence and is stopped. Engine
objects, PNG bytes and long token streams round-trip exactly.
"""

from __future__ import annotations

import io
import os
import pickle
import platform
import stat
import subprocess
import sys
import threading
from multiprocessing.connection import Pipe
from pathlib import Path

import msgspec
import pytest

from engines.api import (
    ChatMessage,
    EmbeddingRequest,
    EmbeddingResult,
    ErrorEvent,
    FinishedEvent,
    ModelInfo,
    NoticeEvent,
    ProgressEvent,
    SamplingParams,
    StatsEvent,
    TextLoadSpec,
    TextRequest,
    TextResult,
    TokenEvent,
)
from engines.diffusion.upscale_types import UpscaleLoadSpec, UpscaleRequest, UpscaleResult, UpscalerInfo
from engines.diffusion.types import (
    GeneratedImage,
    ImageDoneEvent,
    ImageLoadSpec,
    ImageModelInfo,
    ImageRequest,
    ImageResult,
    PreviewEvent,
    StepEvent,
)
from engines.doc_index.types import IndexFileRequest, IndexFileResult, PassageHit, SearchRequest, SearchResult
from engines.errors import EngineError, ErrorKind
from engines.host import EngineHost
from engines.host import protocol
from engines.host.cancel import CANCEL_ALL, CancelLine, RequestCancels
from engines.host.payloads import BY_NAME, CARRIED
from engines.host.protocol import (
    HOST_FROM_ANOTHER_VERSION,
    IMAGE_ENGINE_FROM_ANOTHER_VERSION,
    PROTOCOL_VERSION,
    Done,
    Envelope,
    Event,
    Failed,
    Generate,
    Hello,
    Load,
    ProtocolError,
    decode_from_host,
    decode_to_host,
    encode,
)
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)
from tests.fixtures.waits import wait_until

ROOT = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="the stand-in Python is a shell script")


def png_bytes(size: int = 48) -> bytes:
    """A real PNG whose pixels hold every byte value."""
    from PIL import Image

    image = Image.frombytes("RGB", (size, size), bytes(range(256)) * (size * size * 3 // 256 + 1))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def samples() -> list:
    """One of every type the protocol carries, with unusual values where a type has them."""
    png = png_bytes()
    image = GeneratedImage(png, 7, 48, 48, "a lighthouse\nSteps: 2, Seed: 7")
    request = ImageRequest("a lighthouse ☼", init_image=png, strength=0.5, seed=7)
    text_request = TextRequest((ChatMessage("system", "Be brief."), ChatMessage("user", "héllo <end_of_turn>\x00")),
                               SamplingParams(seed=2**32 - 1), stop=("\n\n",), json_schema={"type": "object"},
                               cache_key="chat-1")
    return [
        TextLoadSpec("/models/a b/ü.gguf", 8192, threads=2, gpu_layers=None, cache_type="q8_0", embedding=True),
        text_request,
        EmbeddingRequest(("one", "two"), normalize=False),
        ModelInfo("/m.gguf", "gemma3", "Gemma", 4096, 32768, 2, 0, "gemma", "gguf", False, kv_cache_bytes=None),
        TextResult("hi", "length", 5, 3, 0.01, 40.5, 4096, "gemma", 12, 1, SamplingParams(temperature=0.0)),
        EmbeddingResult(((0.25, -1.5e-8), (1.0, 0.0)), 4, "MiniLM"),
        TokenEvent("🦙 ü"),
        ProgressEvent("load", "Loading…", None),
        NoticeEvent("The oldest 2 message(s) were left out."),
        StatsEvent(10, 2, 4096, None, 12.5),
        ErrorEvent("memory", "Out of memory."),
        ImageLoadSpec("/sd", backend="onnx", device="cpu", dtype="fp32", cpu_speedups=False),
        request,
        ImageModelInfo("/sd", "sd", "StableDiffusionPipeline", "torch", "cpu", "bf16", 512, ("Euler", "DDIM")),
        ImageResult((image, image), request, "torch", "cpu", "bf16", "sd", 1.5, 0.25, True),
        StepEvent(1, 20, 0, 2, None),
        PreviewEvent(3, png, 1),
        ImageDoneEvent(image, 0, 2),
        UpscaleLoadSpec("/up/x4 ü.safetensors", device="cpu", dtype="fp32"),
        UpscaleRequest(png, scale=2, tile=64, source_name="a b.png"),
        UpscalerInfo("/up/x4.safetensors", "x4", 4, "RRDBNet", "esrgan", 23, 64, "cpu", "fp32"),
        UpscaleResult(png, 96, 96, 48, 48, 2, 1, "x4", "cpu", "fp32", 4, 32, 0.5, None),
        IndexFileRequest("/data/documents.sqlite3", 3, "/docs/ü é.pdf", max_passages=8),
        IndexFileResult("/docs/a.pdf", "partial", "", 8, 20, 8, 2048, 3, "1 of 3 pages have no text layer"),
        SearchRequest("/data/documents.sqlite3", 3, "When was the lamp lit?", top_k=2),
        SearchResult((PassageHit(7, "/docs/a.pdf", 1, 0, 99, "The lamp…", 0.032, 0.61, None),), 20, 0.61, 0.3,
                     "MiniLM"),
    ]


# ---- the frames themselves ---------------------------------------------------------------------


def test_every_carried_type_round_trips_exactly():
    objects = samples()
    assert {type(o) for o in objects} == set(CARRIED)  # a type added to the list gets a sample here
    for obj in objects:
        message, payload = decode_from_host(encode(Event(9, Envelope.seal(obj))))
        assert message.request_id == 9 and message.payload.type == type(obj).__name__
        assert payload == obj and type(payload) is type(obj)


def test_png_bytes_cross_unchanged_both_ways():
    png = png_bytes(256)
    request = ImageRequest("x", init_image=png, strength=0.6)
    _, sent = decode_to_host(encode(Generate(3, Envelope.seal(request))))
    assert sent.init_image == png
    result = ImageResult((GeneratedImage(png, 1, 256, 256, ""),), request, "torch", "cpu", "fp32", "m", 1.0, 0.1, False)
    _, back = decode_from_host(encode(Done(3, Envelope.seal(result))))
    assert back.images[0].png == png and back.request.init_image == png


def test_a_long_token_stream_crosses_a_real_connection_in_order():
    texts = [f"{i}:{chr(0x1F600 + i % 80)} ü\n" for i in range(20_000)] + ["", "x" * 1_000_000]
    reader, writer = Pipe(duplex=False)

    def send() -> None:
        for text in texts:
            writer.send_bytes(encode(Event(4, Envelope.seal(TokenEvent(text)))))
        writer.close()

    sender = threading.Thread(target=send)
    sender.start()
    received = []
    while True:
        try:
            frame = reader.recv_bytes()
        except EOFError:
            break
        message, event = decode_from_host(frame)
        assert message.request_id == 4
        received.append(event.text)
    sender.join()
    assert received == texts


def test_a_type_outside_the_closed_list_is_never_built():
    data = msgspec.msgpack.encode({"args": ["touch", "/tmp/owned"]})
    for name in ("subprocess.Popen", "Popen", "os.system", "FinishedEvent", "ChatMessage", "", "x" * 500):
        with pytest.raises(ProtocolError) as info:
            decode_from_host(encode(Event(1, Envelope(name, msgspec.Raw(data)))))
        assert str(info.value) == f"it names the type {name[:80]!r}, which the engine protocol does not carry"
    assert "Popen" not in BY_NAME and "FinishedEvent" not in BY_NAME  # the host wraps results itself
    with pytest.raises(ProtocolError) as info:
        Envelope.seal(object())
    assert str(info.value) == "object is not a type the engine protocol carries"


def test_fields_are_checked_against_their_types():
    bad = msgspec.msgpack.encode({"messages": [{"role": "root", "content": "x"}]})
    with pytest.raises(ProtocolError) as info:
        decode_to_host(encode(Generate(2, Envelope("TextRequest", msgspec.Raw(bad)))))
    assert str(info.value) == ("its TextRequest does not have the expected fields "
                               "(Invalid enum value 'root' - at `$.messages[0].role`)")


def test_frames_that_are_not_messages_are_refused_with_the_reason():
    expected = {
        pickle.dumps(Event): "Expected `array`, got `object`",
        b"": "Input data was truncated",
        msgspec.msgpack.encode(["exec", 1, "rm -rf ~"]): "Invalid value 'exec' - at `$[0]`",
        msgspec.msgpack.encode(["load", "1", "llama_cpp", ["TextLoadSpec", {}]]): "Expected `int`, got `str` - at `$[1]`",
        msgspec.msgpack.encode(["load", 1, "llama_cpp"]): "Expected `array` of at least length 4, got 3",
        msgspec.msgpack.encode(["hello", 2, 1, "3.11"]): "Invalid value 'hello' - at `$[0]`",  # not to a host
    }
    for frame, reason in expected.items():
        with pytest.raises(ProtocolError) as info:
            decode_to_host(frame)
        assert str(info.value) == f"it is not a message of Atelier's engine protocol ({reason})"


def test_a_newer_peer_may_add_fields_at_the_end():
    frame = msgspec.msgpack.encode(["hello", PROTOCOL_VERSION, 42, "3.13.1", "Linux", {"gpus": 2}])
    message, _ = decode_from_host(frame)
    assert message == Hello(PROTOCOL_VERSION, 42, "3.13.1", "Linux")


def test_the_cancel_line_skips_what_is_not_a_cancel_and_closing_it_cancels_all():
    cancels = RequestCancels()
    reader, writer = Pipe(duplex=False)
    listener = threading.Thread(target=cancels.listen, args=(reader,))
    listener.start()
    line = CancelLine(writer)
    writer.send_bytes(pickle.dumps(5))
    writer.send_bytes(msgspec.msgpack.encode(["cancel", "7"]))
    line.cancel(3)
    wait_until(lambda: cancels.cancelled_up_to() == 3, "the cancel of request 3")
    assert cancels.flag(3).is_set() and not cancels.flag(4).is_set()
    line.close()
    listener.join()
    assert cancels.cancelled_up_to() == CANCEL_ALL


def test_the_host_side_needs_no_package_the_private_image_engine_lacks():
    code = ("import sys\n"
            "for name in ('pydantic', 'requests', 'gguf', 'PySide6', 'llama_cpp', 'torch'):\n"
            "    sys.modules[name] = None\n"
            "import engines.host.standalone, engines.host.process, engines.host.cancel, engines.host.protocol\n"
            "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.stdout == "ok\n", run.stderr


# ---- a real host -----------------------------------------------------------------------------------


@pytest.fixture
def host(tmp_path):
    host = EngineHost(tmp_path / "host.log")
    yield host
    host.close()


def exchange(host: EngineHost, frame: bytes):
    """Put a crafted frame on the host's request line; its answer."""
    host._conn.send_bytes(frame)
    message, _ = host._receive()
    return message


def test_the_host_says_hello_with_the_protocol_version(host):
    host.start()
    assert host.hello == Hello(PROTOCOL_VERSION, host.pid, platform.python_version(), sys.platform)


def test_crafted_frames_are_refused_and_the_host_keeps_serving(host, tiny_gguf, tmp_path):
    pytest.importorskip("llama_cpp")
    host.load("llama_cpp", TextLoadSpec(str(tiny_gguf), context_length=256, threads=1))
    pid = host.pid
    witness = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(witness), "w"))

    spec = msgspec.msgpack.encode({"model_path": str(tiny_gguf)})
    role = msgspec.msgpack.encode({"messages": [{"role": "root", "content": "x"}]})
    refused = "The engine host refused a message: "
    cases = [
        (pickle.dumps(Load(41, "llama_cpp", Payload())), Failed(
            0, ErrorKind.BAD_INPUT, refused + "it is not a message of Atelier's engine protocol "
                                              "(Expected `array`, got `object`).")),
        (encode(Load(42, "llama_cpp", Envelope("subprocess.Popen", msgspec.Raw(spec)))), Failed(
            42, ErrorKind.BAD_INPUT, refused + "it names the type 'subprocess.Popen', which the engine protocol "
                                               "does not carry.")),
        (encode(Generate(43, Envelope("TextRequest", msgspec.Raw(role)))), Failed(
            43, ErrorKind.BAD_INPUT, refused + "its TextRequest does not have the expected fields (Invalid enum "
                                               "value 'root' - at `$.messages[0].role`).")),
        (msgspec.msgpack.encode(["exec", 44, "touch " + str(witness)]), Failed(
            44, ErrorKind.BAD_INPUT, refused + "it is not a message of Atelier's engine protocol "
                                               "(Invalid value 'exec' - at `$[0]`).")),
    ]
    for frame, answer in cases:
        assert exchange(host, frame) == answer
    assert not witness.exists()  # nothing was unpickled, nothing ran
    assert host.pid == pid and host.is_running
    events = list(host.generate(TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=4, seed=1))))
    assert isinstance(events[-1], FinishedEvent) and events[-1].result.completion_tokens >= 1
    log = (tmp_path / "host.log").read_text(encoding="utf-8")
    assert "refused a frame of" in log and "Traceback" not in log


def test_an_object_the_protocol_does_not_carry_is_refused_before_it_is_sent(host):
    with pytest.raises(EngineError) as info:
        host.load("llama_cpp", {"model_path": "x.gguf"})
    assert info.value.kind == ErrorKind.BAD_INPUT
    assert info.value.message == "This cannot be sent to the engine: dict is not a type the engine protocol carries."
    assert not host.is_running  # refused before any process was started


def test_a_host_of_another_protocol_version_is_named_as_such(host, monkeypatch):
    monkeypatch.setattr(protocol, "PROTOCOL_VERSION", PROTOCOL_VERSION + 1)
    with pytest.raises(EngineError) as info:
        host.start()
    assert info.value.kind == ErrorKind.BROKEN
    assert info.value.message == HOST_FROM_ANOTHER_VERSION.format(
        detail=f"it speaks engine protocol {PROTOCOL_VERSION}, this app {PROTOCOL_VERSION + 1}")
    assert not host.is_running


# ---- hosts that do not speak the protocol (stand-in Pythons) --------------------------------------

STAND_IN_HOST = r"""
import sys, time
from multiprocessing.connection import Client
import msgspec
address, mode = sys.argv[-3], sys.argv[1]
key = bytes.fromhex(sys.stdin.readline().strip())
conn, cancel = Client(address, authkey=key), Client(address, authkey=key)
if mode == "pickle":  # Atelier's first protocol: a pickled Ready
    conn.send(("Ready", 1234))
elif mode == "future":
    conn.send_bytes(msgspec.msgpack.encode(["hello", 99, 1234, "3.14.0", "Linux", "new"]))
elif mode == "hostile":
    conn.send_bytes(msgspec.msgpack.encode(["hello", %(version)d, 1234, "3.11.7", "Linux"]))
    conn.recv_bytes()  # the Load
    body = msgspec.msgpack.encode({"args": "touch /tmp/x"})
    conn.send_bytes(msgspec.msgpack.encode(["event", 1, ["subprocess.Popen", msgspec.Raw(body)]]))
time.sleep(600)
""" % {"version": PROTOCOL_VERSION}


def stand_in_python(tmp_path: Path, mode: str) -> str:
    """An executable that takes a Python's arguments and plays a host that speaks *mode*."""
    script = tmp_path / "stand_in_host.py"
    script.write_text(STAND_IN_HOST, encoding="utf-8")
    python = tmp_path / f"python-{mode}"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" {mode} "$@"\n', encoding="utf-8")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return str(python)


@pytest.mark.slow
@posix_only
@pytest.mark.parametrize("mode", ["pickle", "future"])
def test_an_image_engine_of_another_version_gets_one_sentence(tmp_path, mode):
    host = EngineHost(tmp_path / "image.log", role="image", python=stand_in_python(tmp_path, mode))
    with pytest.raises(EngineError) as info:
        host.load("diffusers", ImageLoadSpec("/sd"))
    assert info.value.kind == ErrorKind.BROKEN
    assert info.value.message == IMAGE_ENGINE_FROM_ANOTHER_VERSION
    assert not host.is_running


@pytest.mark.slow
@posix_only
def test_an_image_engine_python_without_msgspec_gets_the_same_sentence(tmp_path):
    python = tmp_path / "python-old"
    python.write_text(  # the real host, in a Python where msgspec cannot be imported
        f'#!/bin/sh\nshift 3\nexec "{sys.executable}" -c "import sys, runpy; sys.modules[\'msgspec\'] = None; '
        f'sys.argv[0] = \'standalone\'; runpy.run_module(\'engines.host.standalone\', run_name=\'__main__\')" "$@"\n',
        encoding="utf-8")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    host = EngineHost(tmp_path / "image.log", role="image", python=str(python), pythonpath=[str(ROOT)])
    with pytest.raises(EngineError) as info:
        host.load("diffusers", ImageLoadSpec("/sd"))
    assert info.value.kind == ErrorKind.BROKEN and info.value.message == IMAGE_ENGINE_FROM_ANOTHER_VERSION
    assert "cannot speak the engine protocol" in (tmp_path / "image.log").read_text(encoding="utf-8")


@pytest.mark.slow
@posix_only
def test_a_host_that_sends_a_type_outside_the_list_is_stopped(tmp_path):
    host = EngineHost(tmp_path / "image.log", role="image", python=stand_in_python(tmp_path, "hostile"))
    host.start()
    pid = host.pid
    with pytest.raises(EngineError) as info:
        host.load("diffusers", ImageLoadSpec("/sd"))
    assert info.value.kind == ErrorKind.INTERNAL
    assert info.value.message == (
        "The engine sent a message Atelier cannot read (it names the type 'subprocess.Popen', which the engine "
        f"protocol does not carry); it was stopped. Details are in {tmp_path / 'image.log'}.")
    assert not host.is_running and not Path(f"/proc/{pid}").exists()


# ---- the frozen app's own entry --------------------------------------------------------------------


@posix_only
def test_the_frozen_app_starts_its_host_as_itself_with_engine_host(tmp_path, tiny_gguf, monkeypatch):
    """In a frozen app ``sys.executable`` is the app: ``atelier --engine-host`` must become the host (desktop/cli.py)."""
    pytest.importorskip("llama_cpp")
    app = tmp_path / "atelier"
    app.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path / "argv"}"\n'
                   f'PYTHONPATH="{ROOT}" exec "{sys.executable}" -m desktop "$@"\n', encoding="utf-8")
    app.chmod(app.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(app))
    host = EngineHost(tmp_path / "host.log")
    try:
        loaded = host.load("llama_cpp", TextLoadSpec(str(tiny_gguf), context_length=256, threads=1))
        assert loaded.architecture == "llama"
        events = list(host.generate(TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=3, seed=1))))
        assert isinstance(events[-1], FinishedEvent)
    finally:
        host.close()
    argv = (tmp_path / "argv").read_text(encoding="utf-8").split()
    assert argv[0] == "--engine-host" and argv[2:] == [str(tmp_path / "host.log"), str(os.getpid())]


# ---- images through the host -----------------------------------------------------------------------


@pytest.mark.slow
def test_image_events_and_img2img_png_bytes_cross_the_host_both_ways(tiny_sd, tmp_path):
    """One real image host (starting one takes seconds): each finished image's event crosses it, and a cancel after
    the first keeps that one (tests/test_image_done_events.py checks the same in-process); then an init image goes
    in and the PNG comes back."""
    pytest.importorskip("diffusers")
    from PIL import Image

    init = png_bytes(64)
    host = EngineHost(tmp_path / "host.log", role="image")
    try:
        host.load("diffusers", ImageLoadSpec(str(tiny_sd), backend="torch", dtype="fp32"))
        events = []
        for event in host.generate(ImageRequest("a lighthouse", width=64, height=64, steps=10, seed=40,
                                                batch_count=2)):
            events.append(event)
            if isinstance(event, ImageDoneEvent):
                host.cancel()  # a user's Cancel, after the first image's event
        done = [e for e in events if isinstance(e, ImageDoneEvent)]
        result = events[-1].result
        assert isinstance(events[-1], FinishedEvent) and result.cancelled
        assert [d.image.seed for d in done] == [40] and result.images == (done[0].image,)

        events = list(host.generate(ImageRequest("a test", width=64, height=64, steps=4, seed=3, init_image=init,
                                                 strength=0.5)))
    finally:
        host.close()
    result = events[-1].result
    done = [e for e in events if isinstance(e, ImageDoneEvent)]
    assert result.request.init_image == init
    assert [d.image for d in done] == list(result.images) and len(result.images) == 1
    assert Image.open(io.BytesIO(result.images[0].png)).size == (64, 64)


@pytest.mark.parametrize("args, message", [
    (["only-one"], "error: usage: python -m engines.host.standalone ADDRESS LOG_PATH [PARENT_PID]  "
                   "(authkey in hex on stdin)"),
    (["addr", "log", "not-a-pid"], "error: usage: python -m engines.host.standalone ADDRESS LOG_PATH [PARENT_PID]  "
                                   "(authkey in hex on stdin)"),
    (["addr", "log"], "error: the engine host reads its key from standard input (started by Atelier only)"),
])
def test_the_engine_host_entry_started_by_hand_says_how_it_is_used(tmp_path, args, message):
    run = subprocess.run([sys.executable, "-m", "desktop", "--engine-host", *args], cwd=ROOT, input="",
                         capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stderr, run.stdout) == (2, message + "\n", "")
