"""The engine host process: real llama.cpp behind the pipe, crashes and stops."""

import os
import signal
import threading

import pytest

from engines.api import ChatMessage, FinishedEvent, SamplingParams, TextLoadSpec, TextRequest, TokenEvent
from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.host import EngineHost
from engines.host.client import describe_exit

pytest.importorskip("llama_cpp")


@pytest.fixture
def host(tmp_path):
    host = EngineHost(tmp_path / "host.log")
    yield host
    host.close()


def long_request(seed=1) -> TextRequest:
    return TextRequest((ChatMessage("user", "tell me everything"),), SamplingParams(max_tokens=2000, temperature=1.0, min_p=0.0, seed=seed))


@pytest.mark.slow
def test_load_generate_and_reuse(host, tiny_gguf):
    spec = TextLoadSpec(str(tiny_gguf), context_length=256, threads=1)
    info = host.load("llama_cpp", spec)
    pid = host.pid
    assert info.architecture == "llama"
    events = list(host.generate(TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=6, seed=1))))
    assert isinstance(events[-1], FinishedEvent)
    text = "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert text == events[-1].result.text
    assert host.load("llama_cpp", spec) is info and host.pid == pid  # same model: no reload


@pytest.mark.slow
def test_switching_models_restarts_the_process(host, tiny_gguf, tmp_path):
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    other = write_tiny_llama_gguf(tmp_path / "other.gguf", seed=5)
    host.load("llama_cpp", TextLoadSpec(str(tiny_gguf), context_length=256, threads=1))
    first_pid = host.pid
    host.load("llama_cpp", TextLoadSpec(str(other), context_length=256, threads=1))
    assert host.pid != first_pid
    assert not _alive(first_pid)


@pytest.mark.slow
def test_stop_ends_the_reply_and_keeps_the_model(host, gemma_path):
    host.load("llama_cpp", TextLoadSpec(str(gemma_path), context_length=1024))
    pid = host.pid
    tokens = []
    result = None
    for event in host.generate(long_request()):
        if isinstance(event, TokenEvent):
            tokens.append(event.text)
            if len(tokens) == 5:
                host.cancel()
        elif isinstance(event, FinishedEvent):
            result = event.result
    assert result.finish_reason == "cancelled" and result.text == "".join(tokens)
    assert 5 <= result.completion_tokens < 2000
    assert host.pid == pid  # still loaded
    again = list(host.generate(TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=3, seed=1))))
    assert isinstance(again[-1], FinishedEvent) and again[-1].result.finish_reason != "cancelled"


@pytest.mark.slow
def test_killing_the_host_mid_reply_is_reported_and_the_next_request_restarts(host, gemma_path):
    spec = TextLoadSpec(str(gemma_path), context_length=1024)
    host.load("llama_cpp", spec)
    got = []
    with pytest.raises(EngineCrashed) as info:
        for event in host.generate(long_request()):
            if isinstance(event, TokenEvent):
                got.append(event.text)
                if len(got) == 3:
                    os.kill(host.pid, signal.SIGKILL)
    assert info.value.kind == ErrorKind.CRASHED
    assert info.value.message.startswith(  # then the last line of the host's log that says something, if any
        "The engine stopped unexpectedly: it was killed, most likely because the system ran out of memory.")
    assert not host.is_running
    host.load("llama_cpp", spec)  # a fresh host
    events = list(host.generate(TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=3))))
    assert isinstance(events[-1], FinishedEvent)


def test_a_segfault_is_explained():
    assert "segmentation fault" in describe_exit(-signal.SIGSEGV)
    assert "GGML_ASSERT" in describe_exit(-signal.SIGABRT, "x\nGGML_ASSERT(n > 0) failed\n")
    assert "out of memory" in describe_exit(-signal.SIGKILL)


def test_bad_files_get_clear_errors(host, tmp_path):
    missing = tmp_path / "missing.gguf"
    notes = _write(tmp_path / "notes.gguf", b"PK\x03\x04 this is a zip")
    expected = {
        missing: f"The model file does not exist: {missing}",
        notes: "notes.gguf: This is not a GGUF model file (it starts with b'PK\\x03\\x04'). It looks like a ZIP "
               "archive, such as a PyTorch .bin/.pt checkpoint.",
    }
    for path, message in expected.items():
        with pytest.raises(EngineError) as info:
            host.load("llama_cpp", TextLoadSpec(str(path)))
        assert info.value.kind == ErrorKind.MODEL_FILE and info.value.message == message
    assert host.is_running  # the host survives bad input


def test_truncated_gguf(host, tiny_gguf, tmp_path):
    from tests.fixtures.tiny_gguf import truncate_file

    broken = tmp_path / "truncated.gguf"
    broken.write_bytes(tiny_gguf.read_bytes())
    truncate_file(broken, broken.stat().st_size // 2)
    with pytest.raises(EngineError) as info:
        host.load("llama_cpp", TextLoadSpec(str(broken)))
    assert info.value.kind == ErrorKind.MODEL_FILE
    assert info.value.message.startswith("truncated.gguf is incomplete. The file is truncated: the header declares ")


def test_unknown_architecture(host, tmp_path):
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    path = write_tiny_llama_gguf(tmp_path / "alien.gguf", architecture="quantum-llm")
    with pytest.raises(EngineError) as info:
        host.load("llama_cpp", TextLoadSpec(str(path)))
    assert info.value.kind == ErrorKind.UNSUPPORTED and "quantum-llm" in info.value.message


@pytest.mark.slow
def test_context_too_large_for_memory(host, gemma_path):
    with pytest.raises(EngineError) as info:
        host.load("llama_cpp", TextLoadSpec(str(gemma_path), context_length=4_194_304))
    assert info.value.kind == ErrorKind.MEMORY
    assert info.value.message.startswith("Not enough memory for a context of 4,194,304 tokens: ")


def _write(path, data):
    path.write_bytes(data)
    return path


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0); check its state
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_stop_during_a_long_prompt_aborts_inside_llama_cpp(host, gemma_path):
    """The abort callback stops prompt processing itself, not just the token loop: no token is ever made."""
    host.load("llama_cpp", TextLoadSpec(str(gemma_path), context_length=8192))
    text = "The quick brown fox jumps over the lazy dog. " * 500  # ~5,000 tokens: tens of seconds to read here
    request = TextRequest((ChatMessage("user", text),), SamplingParams(max_tokens=16, seed=1))
    timer = threading.Timer(0.3, host.cancel)
    timer.start()
    events = list(host.generate(request))
    timer.join()
    result = events[-1].result
    assert result.finish_reason == "cancelled" and result.completion_tokens == 0
    assert not [e for e in events if isinstance(e, TokenEvent)]
    # the model is still usable, and a fresh request re-evaluates the prompt cleanly
    again = list(host.generate(TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=3, seed=1))))
    assert isinstance(again[-1], FinishedEvent) and again[-1].result.finish_reason != "cancelled"
