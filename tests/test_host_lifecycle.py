"""The engine host's life: a Stop reaches a load, a stuck host closes, a killed parent leaves nothing behind.

Reproductions of defects D7, D8 and D26 and of issue 12's cancellable load,
with the real host process, real llama.cpp and the real CLI. Nothing here
waits on the clock for a verdict: each test waits (with a generous bound)
for an event, then asserts what happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from engines.api import ChatMessage, FinishedEvent, SamplingParams, TextLoadSpec, TextRequest, TokenEvent
from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.host import EngineHost
from engines.host.client import CLOSED_WHILE_BUSY
from tests.fixtures.waits import HANG_S, wait_until
from tests.test_template_budget import CPU_BOMB

pytest.importorskip("llama_cpp")
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and signals are POSIX")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def host(tmp_path):
    host = EngineHost(tmp_path / "host.log")
    yield host
    host.close()


def short_request(**kw) -> TextRequest:
    return TextRequest((ChatMessage("user", "hi"),), SamplingParams(max_tokens=3, seed=1, **kw))


def long_request() -> TextRequest:
    return TextRequest((ChatMessage("user", "tell me everything"),),
                       SamplingParams(max_tokens=2000, temperature=1.0, min_p=0.0, seed=1))


# ---- cancel per request ------------------------------------------------------------------------
# Replies that must still be running when Stop comes use Gemma: the random tiny model can end
# a reply (end-of-text) within its first few tokens.


@pytest.mark.slow
def test_stop_during_a_load_of_the_real_model_ends_it_as_cancelled_and_the_next_request_works(host, gemma_path):
    events = []

    def on_event(event):
        events.append(event)
        if len(events) == 1:
            host.cancel()  # pressed while the model is loading

    spec = TextLoadSpec(str(gemma_path), context_length=1024)
    with pytest.raises(EngineError) as info:
        host.load("llama_cpp", spec, on_event)
    assert info.value.kind == ErrorKind.CANCELLED
    assert info.value.message == f"Loading {gemma_path.name} was stopped."
    assert events[0].message == f"Checking {gemma_path.name}…"
    pid = host.pid
    assert pid is not None and host.model_info is None
    host.load("llama_cpp", spec)  # the same host, and the Stop does not linger
    assert host.pid == pid
    result = list(host.generate(short_request()))[-1].result
    assert result.finish_reason != "cancelled" and result.completion_tokens >= 1


def test_a_stop_while_the_host_process_starts_still_stops_the_load(host, tiny_gguf):
    real_start = host.start

    def stop_then_start():
        host.cancel()  # pressed before the process is even up
        real_start()

    host.start = stop_then_start
    with pytest.raises(EngineError) as info:
        host.load("llama_cpp", TextLoadSpec(str(tiny_gguf), context_length=256, threads=1))
    assert info.value.kind == ErrorKind.CANCELLED and info.value.message == "Loading tiny-llama.gguf was stopped."
    host.start = real_start
    reloaded = host.load("llama_cpp", TextLoadSpec(str(tiny_gguf), context_length=256, threads=1))
    assert reloaded.architecture == "llama"


def test_a_stop_between_requests_never_reaches_the_next_one(host, tiny_gguf):
    host.load("llama_cpp", TextLoadSpec(str(tiny_gguf), context_length=256, threads=1))
    first = list(host.generate(short_request()))[-1].result
    host.cancel()  # nothing is running: nothing to stop, and nothing is remembered
    second = list(host.generate(short_request()))[-1].result
    assert first.finish_reason != "cancelled" and second.finish_reason != "cancelled"
    assert second.text == first.text


@pytest.mark.slow
def test_a_stop_reaches_only_the_request_in_flight(host, gemma_path):
    host.load("llama_cpp", TextLoadSpec(str(gemma_path), context_length=2048))
    stopped = None
    for event in host.generate(long_request()):
        if isinstance(event, TokenEvent) and stopped is None:
            stopped = True
            host.cancel()
        elif isinstance(event, FinishedEvent):
            assert event.result.finish_reason == "cancelled"
    result = list(host.generate(short_request()))[-1].result
    assert result.finish_reason != "cancelled"


@pytest.mark.slow
def test_stop_from_another_thread_during_a_reply(host, gemma_path):
    host.load("llama_cpp", TextLoadSpec(str(gemma_path), context_length=2048))
    first_token = threading.Event()
    stopper = threading.Thread(target=lambda: first_token.wait(HANG_S) and host.cancel())
    stopper.start()
    result = None
    for event in host.generate(long_request()):
        if isinstance(event, TokenEvent):
            first_token.set()
        elif isinstance(event, FinishedEvent):
            result = event.result
    stopper.join()
    assert result.finish_reason == "cancelled" and result.completion_tokens < 2000


# ---- non-regular files (D7) ------------------------------------------------------------------------


@posix_only
def test_a_fifo_named_like_a_model_is_refused_at_once(host, tmp_path):
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    with pytest.raises(EngineError) as info:
        host.load("llama_cpp", TextLoadSpec(str(fifo)))
    assert info.value.kind == ErrorKind.MODEL_FILE
    assert info.value.message == "fifo.gguf is not a regular file (it is a FIFO (named pipe))."
    assert host.is_running  # the host survives it


# ---- close (D26) -------------------------------------------------------------------------------------


@posix_only
@pytest.mark.slow
def test_close_ends_a_stuck_host_and_tells_the_thread_that_waited_on_it(host, gemma_path):
    host.load("llama_cpp", TextLoadSpec(str(gemma_path), context_length=2048))
    pid = host.pid
    outcome: list = []
    first_token = threading.Event()

    def reply():
        try:
            for event in host.generate(long_request()):
                if isinstance(event, TokenEvent):
                    first_token.set()
        except EngineError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=reply)
    worker.start()
    assert first_token.wait(HANG_S)
    os.kill(pid, signal.SIGSTOP)  # stuck: it will never read the Shutdown
    host.close()
    worker.join(HANG_S)
    assert not worker.is_alive()
    assert not _alive(pid)
    assert len(outcome) == 1 and isinstance(outcome[0], EngineCrashed)
    assert outcome[0].message == CLOSED_WHILE_BUSY
    assert not host.is_running and host.pid is None


def test_close_twice_and_close_before_start_are_harmless(tmp_path, tiny_gguf):
    host = EngineHost(tmp_path / "h.log")
    host.close()
    host.load("llama_cpp", TextLoadSpec(str(tiny_gguf), context_length=256, threads=1))
    pid = host.pid
    host.close()
    host.close()
    assert not _alive(pid)


# ---- orphans: the host dies with its parent ----------------------------------------------------------


@pytest.fixture
def bomb_model(tmp_path):
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    return write_tiny_llama_gguf(tmp_path / "bomb.gguf", chat_template=CPU_BOMB)


@posix_only
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_the_cli_leaves_no_engine_host_behind(atelier_home, bomb_model, sig):
    """A host stuck where nothing reaches it (stopped, while it renders a CPU-bomb template) when its CLI is killed.

    A host that reads or writes its pipe notices a dead parent by itself;
    one blocked in native code, in ``open()`` or in a spinning template does
    not, and SIGSTOP makes that state certain.
    """
    cli = subprocess.Popen(
        [sys.executable, "-m", "desktop", "chat", "--model", str(bomb_model), "--prompt", "hi", "--max-tokens", "5"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        host = _wait_for_child(cli.pid, "engines.host.standalone")
        wait_until(lambda: "engine host" in _read(atelier_home / "logs"), "the host to start serving")
        children = psutil.Process(cli.pid).children(recursive=True)
        host.suspend()
        cli.send_signal(sig)
        assert cli.wait(HANG_S) == -sig
        wait_until(lambda: not any(_alive(c.pid) for c in children), "every process the CLI started to go")
        assert not _alive(host.pid)
    finally:
        _kill_group(cli)


@posix_only
@pytest.mark.slow
def test_killing_the_parent_of_a_foreign_interpreter_host_leaves_nothing_behind(tmp_path, bomb_model):
    driver = (
        "import sys; from engines.host import EngineHost; from engines.api import TextLoadSpec;\n"
        f"h = EngineHost({str(tmp_path / 'f.log')!r}, python=sys.executable, pythonpath=[{str(ROOT)!r}]);\n"
        f"h.load('llama_cpp', TextLoadSpec({str(bomb_model)!r}, context_length=256)); import time; time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", driver], cwd=ROOT, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        host = _wait_for_child(parent.pid, "engines.host.standalone")
        wait_until(lambda: "engine host" in _read(tmp_path / "f.log"), "the foreign host to start serving")
        host.suspend()  # stuck where nothing reaches it
        parent.kill()
        parent.wait(HANG_S)
        wait_until(lambda: not _alive(host.pid), "the foreign host to go")
    finally:
        _kill_group(parent)


WATCHED_CHILD = """
import os, sys, threading
from engines.host import watchdog
watchdog._set_parent_death_signal = lambda: None  # leave it to the thread alone, as on macOS and Windows
watchdog.die_with_parent(os.getppid())
print("watching", flush=True)
if sys.argv[1] == "spin":
    while True:
        pass
open(sys.argv[2], "rb")  # a FIFO with no writer: blocks for ever
"""


@posix_only
@pytest.mark.parametrize("busy", ["spin", "fifo"])
def test_the_watchdog_thread_ends_a_child_whose_main_thread_is_busy(tmp_path, busy):
    """Without PR_SET_PDEATHSIG (macOS, Windows) the watchdog thread alone must do it."""
    fifo = tmp_path / "block.gguf"
    os.mkfifo(fifo)
    script = tmp_path / "child.py"
    script.write_text(WATCHED_CHILD)
    middle = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time; "
         f"c = subprocess.Popen([sys.executable, {str(script)!r}, {busy!r}, {str(fifo)!r}], stdout=subprocess.PIPE); "
         "c.stdout.readline(); print(c.pid, flush=True); time.sleep(600)"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, start_new_session=True,
    )
    try:
        child_pid = int(middle.stdout.readline())
        assert _alive(child_pid)
        middle.kill()
        middle.wait(HANG_S)
        wait_until(lambda: not _alive(child_pid), "the watched child to go")
    finally:
        _kill_group(middle)


# ---- helpers -------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_child(pid: int, marker: str) -> psutil.Process:
    found: list[psutil.Process] = []

    def look() -> bool:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                if marker in " ".join(child.cmdline()):
                    found.append(child)
                    return True
            except psutil.NoSuchProcess:
                continue
        return False

    wait_until(look, f"a child process running {marker}")
    return found[0]


def _read(path: Path) -> str:
    files = sorted(path.glob("*.log")) if path.is_dir() else [path]
    text = ""
    for file in files:
        try:
            text += file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            pass
    return text


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(HANG_S)
