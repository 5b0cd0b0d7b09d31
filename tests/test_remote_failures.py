"""A remote server that fails gets one clear line, and the partial reply is kept.

The far end is a real HTTP server on 127.0.0.1 (tests/fixtures/openai_stub.py)
made to fail the ways servers do: down (a free port: connection refused),
slow (it never answers, or stalls mid-reply: bounded read timeouts), garbage
(an HTML page, a line that is not JSON), a stream dropped mid-reply
(close-delimited and chunked), an error inside the stream, a key it wants,
a conversation too long, a self-signed certificate. Each is checked through
the remote engine host, through ChatTurn with the real chat history (what
the chat page saves), and on the command line (one ``error:`` line).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engines.api import ChatMessage, FinishedEvent, NoticeEvent, SamplingParams, StatsEvent, TextRequest, TokenEvent
from engines.chat import ChatStore
from engines.chat.session import ChatTurn
from engines.errors import EngineError, ErrorKind
from engines.remote import RemoteHost, RemoteServers, RemoteSpec
from engines.remote.http import KeyRefused
from engines.remote.manage import add_server
from engines.workspace import open_workspace
from tests.fixtures.cli_runner import cli_env, error_lines, run_atelier
from tests.fixtures.llama_server import free_port
from tests.fixtures.openai_stub import StubOpenAI, openai_stub, self_signed_tls  # noqa: F401  (fixture)
from tests.fixtures.waits import HANG_S, wait_until

QUICK = 0.5  # seconds: the read timeout these servers get, so that "slow" is found at once


def spec(stub: StubOpenAI, timeout: float = 30.0, **changes) -> RemoteSpec:
    return RemoteSpec("stub", stub.base_url, "stub", read_timeout_s=timeout, **changes)


def ask(text: str = "Say hello", **sampling) -> TextRequest:
    return TextRequest((ChatMessage("user", text),), SamplingParams(seed=5, **sampling))


def run(host: RemoteHost, request: TextRequest) -> tuple[list, EngineError | None]:
    events, error = [], None
    try:
        for event in host.generate(request):
            events.append(event)
    except EngineError as exc:
        error = exc
    return events, error


def loaded(stub: StubOpenAI, timeout: float = 30.0) -> RemoteHost:
    host = RemoteHost()
    host.load("remote", spec(stub, timeout))
    return host


@pytest.fixture
def store(tmp_path: Path):
    with ChatStore(tmp_path / "atelier.sqlite3") as s:
        yield s


def turn(store: ChatStore, host: RemoteHost, stub: StubOpenAI, timeout: float = 30.0, on_event=lambda event: None):
    """One chat turn as the chat page runs it; returns the outcome and the reply as saved."""
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "Say hello")
    outcome = ChatTurn(store, host, chat.id, spec(stub, timeout), engine="remote").run(on_event)
    return outcome, store.messages(chat.id)[-1]


# ---- a working server: what is sent and what comes back ---------------------------------------------------


def test_a_reply_streams_with_the_servers_usage_and_the_sampling_sent(openai_stub: StubOpenAI) -> None:
    host = loaded(openai_stub)
    events, error = run(host, ask(max_tokens=64, temperature=0.3))
    assert error is None
    assert [e.text for e in events if isinstance(e, TokenEvent)] == ["Hello", ",", " world", "!"]
    result = events[-1].result
    assert isinstance(events[-1], FinishedEvent) and isinstance(events[-2], StatsEvent)
    assert (result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens, result.seed) == (
        "Hello, world!", "stop", 7, 4, 5)
    assert result.time_to_first_token_s is not None and result.template == "the server's"
    body = openai_stub.bodies[-1]
    assert body == {"model": "stub", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 64,
                    "temperature": 0.3, "top_p": 0.95, "seed": 5, "messages": [{"role": "user", "content": "Say hello"}]}
    assert host.model_info.name == "stub/stub" and host.model_info.template_source == "remote"


def test_loading_a_model_the_server_does_not_list_names_what_it_lists(openai_stub: StubOpenAI) -> None:
    openai_stub.models = ["qwen", "llama"]
    with pytest.raises(EngineError) as missing:
        RemoteHost().load("remote", spec(openai_stub))
    assert (missing.value.kind, missing.value.message) == (
        ErrorKind.NOT_FOUND, "The remote server 'stub' does not list the model 'stub'; it lists: qwen, llama.")


def test_a_conversation_too_long_for_the_server_drops_its_oldest_turns_when_allowed(openai_stub: StubOpenAI) -> None:
    openai_stub.chat_mode, openai_stub.max_messages = "overflow", 3
    history = (ChatMessage("system", "Be brief."), ChatMessage("user", "one"), ChatMessage("assistant", "1"),
               ChatMessage("user", "two"), ChatMessage("assistant", "2"), ChatMessage("user", "three"))
    host = loaded(openai_stub)
    _events, error = run(host, TextRequest(history, SamplingParams(seed=1)))
    assert (error.kind, error.message) == (ErrorKind.CONTEXT_OVERFLOW, (
        "The conversation is longer than the context of 'stub' on 'stub': This model's maximum context length is 64 "
        "tokens. However, you requested 90 tokens."))
    events, error = run(host, TextRequest(history, SamplingParams(seed=1), overflow="drop_oldest"))
    assert error is None
    assert [e.message for e in events if isinstance(e, NoticeEvent)] == [
        "The 3 oldest messages were left out of this reply: the conversation is longer than the server's context."]
    assert events[-1].result.dropped_messages == 3
    assert openai_stub.bodies[-1]["messages"] == [{"role": "system", "content": "Be brief."},
                                                  {"role": "assistant", "content": "2"},
                                                  {"role": "user", "content": "three"}]


# ---- down, slow ------------------------------------------------------------------------------------------


def test_a_server_that_is_down_is_one_clear_line(store: ChatStore) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EngineError) as down:
        RemoteHost().load("remote", RemoteSpec("box", url, "qwen"))
    assert (down.value.kind, down.value.message) == (ErrorKind.NETWORK, (
        f"Could not reach the remote server 'box' at {url}: the connection was refused (is the server running, "
        "and on that port?)."))
    run_ = run_atelier("remote", "add", "box", url)
    assert run_.returncode == 1 and error_lines(run_) == [f"error: {down.value.message}"]
    assert run_atelier("remote", "list", "--json").stdout.strip() == b'{"servers": []}'


def test_a_server_that_never_accepts_the_connection_is_given_up_on(monkeypatch) -> None:
    """A listener whose accept queue is full: Linux drops the SYN, so connecting hangs until the connect timeout."""
    import socket

    from engines.remote import http

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = [socket.create_connection(("127.0.0.1", port))]  # fills the queue (backlog 0 still takes one)
    probe = socket.socket()
    probe.settimeout(0.2)
    try:
        probe.connect(("127.0.0.1", port))
        pytest.skip("this system accepts connections beyond a full listen queue")
    except TimeoutError:
        pass
    finally:
        probe.close()
    monkeypatch.setattr(http, "CONNECT_TIMEOUT_S", 0.5)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        with pytest.raises(EngineError) as slow:
            RemoteHost().load("remote", RemoteSpec("box", url, "qwen"))
    finally:
        for sock in (*queued, listener):
            sock.close()
    assert (slow.value.kind, slow.value.message) == (
        ErrorKind.NETWORK, f"Could not reach the remote server 'box' at {url}: it did not accept a connection within "
                           "0.5 s.")


@pytest.mark.slow
def test_a_server_that_never_answers_is_given_up_on_after_its_timeout(openai_stub: StubOpenAI) -> None:
    openai_stub.models_mode = "hang"
    with pytest.raises(EngineError) as slow:
        RemoteHost().load("remote", spec(openai_stub, QUICK))
    assert slow.value.message == ("The remote server 'stub' did not answer within 0.5 s. It may be busy or stuck; a "
                                  "slow server can be given longer with 'atelier remote add … --timeout'.")
    run_ = run_atelier("remote", "add", "slow", openai_stub.base_url, "--timeout", "0.5")
    assert run_.returncode == 1 and error_lines(run_) == [
        "error: The remote server 'slow' did not answer within 0.5 s. It may be busy or stuck; a slow server can be "
        "given longer with 'atelier remote add … --timeout'."]


def test_a_reply_that_never_starts_ends_the_turn_with_one_line(openai_stub: StubOpenAI, store: ChatStore) -> None:
    openai_stub.chat_mode = "hang"
    outcome, reply = turn(store, loaded(openai_stub, QUICK), openai_stub, QUICK)
    assert outcome.error.message == ("The remote server 'stub' did not answer within 0.5 s. It may be busy or stuck; "
                                     "a slow server can be given longer with 'atelier remote add … --timeout'.")
    assert (reply.role, reply.status, reply.content, reply.notice) == ("assistant", "error", "", outcome.error.message)


def test_a_reply_that_stalls_midway_keeps_its_text(openai_stub: StubOpenAI, store: ChatStore) -> None:
    openai_stub.chat_mode = "stall"
    outcome, reply = turn(store, loaded(openai_stub, QUICK), openai_stub, QUICK)
    assert outcome.error.message == ("The remote server 'stub' stopped sending in the middle of the reply (nothing for "
                                     "0.5 s); the text so far is kept.")
    assert (reply.status, reply.content, reply.notice) == ("error", "Hello", outcome.error.message)


# ---- garbage ---------------------------------------------------------------------------------------------


def test_a_web_page_instead_of_an_api_is_said_so(openai_stub: StubOpenAI) -> None:
    openai_stub.models_mode = "html"
    run_ = run_atelier("remote", "add", "web", openai_stub.base_url)
    assert run_.returncode == 1 and error_lines(run_) == [
        "error: The remote server 'web' answered GET /models with text that is not JSON (<!doctype html><html><head>"
        "<title>Welcome to nginx!</title>…), not an OpenAI model list: is "
        f"{openai_stub.base_url} the API's base URL (it usually ends in /v1)?"]
    openai_stub.models_mode, openai_stub.chat_mode = "ok", "html"
    _events, error = run(loaded(openai_stub), ask())
    assert error.message == "The remote server 'stub' sent a text/html answer instead of an OpenAI-compatible reply."


def test_a_line_that_is_not_json_mid_reply_keeps_the_text(openai_stub: StubOpenAI, store: ChatStore) -> None:
    openai_stub.chat_mode = "not_json"
    outcome, reply = turn(store, loaded(openai_stub), openai_stub)
    assert outcome.error.message == ("The remote server 'stub' sent a line that is not JSON (<html>502 Bad "
                                     "Gateway</html>) instead of an OpenAI-compatible reply; the text so far is kept.")
    assert (reply.status, reply.content) == ("error", "Hello")


def test_an_error_sent_inside_the_stream_is_the_servers_own_words(openai_stub: StubOpenAI, store: ChatStore) -> None:
    openai_stub.chat_mode = "error_event"
    outcome, reply = turn(store, loaded(openai_stub), openai_stub)
    assert outcome.error.message == "The remote server 'stub' stopped the reply with an error: CUDA out of memory."
    assert (reply.status, reply.content) == ("error", "Hello")


# ---- a stream dropped mid-reply -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["drop", "drop_chunked", "no_done"])
def test_a_stream_dropped_mid_reply_keeps_the_text(openai_stub: StubOpenAI, store: ChatStore, mode: str) -> None:
    """Close-delimited (the body just ends), chunked (a chunk cut short), or ended without [DONE]."""
    openai_stub.chat_mode = mode
    outcome, reply = turn(store, loaded(openai_stub), openai_stub)
    assert (outcome.error.kind, outcome.error.message) == (ErrorKind.NETWORK, (
        "The connection to the remote server 'stub' was lost in the middle of the reply; the text so far is kept."))
    expected = "Hello, world!" if mode == "no_done" else "Hello"
    assert (reply.status, reply.content, reply.notice) == ("error", expected, outcome.error.message)


# ---- Stop ------------------------------------------------------------------------------------------------------


def test_stop_mid_reply_closes_the_stream_and_keeps_the_text(openai_stub: StubOpenAI, store: ChatStore) -> None:
    openai_stub.chat_mode = "hold"  # one piece, then the server holds the stream open
    host = loaded(openai_stub)
    received = threading.Event()
    # Stop from another thread (as the GUI's Stop button), once the first piece arrived: the reader is then
    # blocked on a server that sends nothing more, or about to be.
    threading.Thread(target=lambda: received.wait(HANG_S) and host.cancel(), daemon=True).start()
    outcome, reply = turn(store, host, openai_stub,
                          on_event=lambda event: isinstance(event, TokenEvent) and received.set())
    assert outcome.error is None and outcome.result.finish_reason == "cancelled"
    assert (reply.status, reply.content) == ("cancelled", "Hello")


def test_stop_while_the_server_is_still_thinking_ends_at_once(openai_stub: StubOpenAI) -> None:
    """The read is blocked on a server that has not answered yet: Stop shuts the socket, no timeout is waited for."""
    openai_stub.chat_mode = "hang"
    host = loaded(openai_stub, timeout=30)  # a Stop that did not cut the socket would end in a timeout error
    events = host.generate(ask())

    def stop_when_sent() -> None:
        wait_until(lambda: openai_stub.bodies, "the request reached the server")
        host.cancel()

    threading.Thread(target=stop_when_sent, daemon=True).start()
    finished = list(events)
    assert len(finished) == 1 and finished[0].result.finish_reason == "cancelled" and finished[0].result.text == ""


def test_a_stop_never_reaches_the_next_request(openai_stub: StubOpenAI) -> None:
    host = loaded(openai_stub)
    host.cancel()  # nothing in flight: nothing to stop
    events, error = run(host, ask())
    assert error is None and events[-1].result.finish_reason == "stop"


# ---- keys and TLS ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_server_that_wants_a_key_says_so_and_the_key_from_the_environment_is_sent(openai_stub: StubOpenAI,
                                                                                    monkeypatch) -> None:
    openai_stub.key = "sk-box-123"
    servers = RemoteServers.beside(open_workspace().models.file)
    with pytest.raises(KeyRefused) as refused:
        add_server(servers, "box", openai_stub.base_url)
    assert refused.value.message == (
        "The remote server 'box' refused the request (401 Unauthorized: Invalid API key): it needs a valid API key. "
        "Add the server again with its key, or with --api-key-env VAR.")
    run_ = run_atelier("remote", "add", "box", openai_stub.base_url)  # no terminal to ask for the key on
    assert run_.returncode == 2 and error_lines(run_) == [f"error: {refused.value.message}"]
    env = cli_env(BOX_KEY="sk-box-123")
    run_ = run_atelier("remote", "add", "box", openai_stub.base_url, "--api-key-env", "BOX_KEY", env=env)
    assert run_.returncode == 0, run_.stderr
    assert run_.stdout.decode().strip() == (f"Added 'box' ({openai_stub.base_url}): 1 model, stub. Use them as "
                                            "box/MODEL, e.g. box/stub.")
    assert b"sk-box-123" not in (Path(open_workspace().models.file).with_name("remotes.json")).read_bytes()
    run_ = run_atelier("chat", "--model", "box/stub", "--prompt", "Say hello", env=env)
    assert run_.returncode == 0, run_.stderr
    assert run_.stdout.decode() == "Hello, world!\n"
    assert openai_stub.authorizations[-1] == "Bearer sk-box-123"
    run_ = run_atelier("chat", "--model", "box/stub", "--prompt", "Say hello", env=cli_env(BOX_KEY=None))
    assert run_.returncode == 2 and error_lines(run_) == [
        "error: The key for the remote server 'box' comes from the environment variable BOX_KEY, which is not set "
        "here. Set it where Atelier starts from, then try again."]


@pytest.mark.slow
def test_a_self_signed_certificate_is_refused_and_verification_cannot_be_skipped(tmp_path: Path) -> None:
    tls, cert = self_signed_tls(tmp_path)
    stub = StubOpenAI(tls=tls).start()
    try:
        run_ = run_atelier("remote", "add", "tls", stub.base_url)
        assert run_.returncode == 1 and error_lines(run_) == [
            f"error: Could not reach the remote server 'tls' at {stub.base_url}: its TLS certificate could not be "
            "verified (self-signed certificate), so Atelier did not connect. Use a certificate this system trusts, "
            "or point SSL_CERT_FILE at your own certificate authority's certificate."]
        # Trusted explicitly (a private certificate authority): verified, and then it works.
        run_ = run_atelier("remote", "add", "tls", stub.base_url, env=cli_env(SSL_CERT_FILE=str(cert)))
        assert run_.returncode == 0, run_.stderr
        run_ = run_atelier("chat", "--model", "tls/stub", "--prompt", "hi", env=cli_env(SSL_CERT_FILE=str(cert)))
        assert (run_.returncode, run_.stdout.decode()) == (0, "Hello, world!\n")
    finally:
        stub.stop()


@pytest.mark.slow
def test_offline_mode_refuses_a_server_elsewhere_and_keeps_one_on_loopback(openai_stub: StubOpenAI) -> None:
    env = cli_env(ATELIER_OFFLINE="1")
    run_ = run_atelier("remote", "add", "far", "http://192.0.2.1:8000/v1", env=env)
    assert run_.returncode == 1 and error_lines(run_) == [
        "error: Atelier is in offline mode, and the remote server 'far' (192.0.2.1) is not on this computer. Turn "
        "offline mode off in Settings to use it; servers on 127.0.0.1 work offline."]
    run_ = run_atelier("remote", "add", "near", openai_stub.base_url, env=env)
    assert run_.returncode == 0, run_.stderr
    run_ = run_atelier("chat", "--model", "near/stub", "--prompt", "hi", env=env)
    assert (run_.returncode, run_.stdout.decode()) == (0, "Hello, world!\n")


def test_the_key_is_asked_for_on_a_terminal_when_the_server_wants_one(openai_stub: StubOpenAI) -> None:
    """A person at a terminal types the key (not echoed); it goes to the keyring, which here says it is missing."""
    import os
    import pty
    import select
    import subprocess

    from tests.fixtures.cli_runner import ROOT, atelier_script

    openai_stub.key = "sk-typed"
    main, terminal = pty.openpty()
    env = cli_env(PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")  # never the developer's real keyring
    process = subprocess.Popen([atelier_script(), "remote", "add", "box", openai_stub.base_url], cwd=ROOT,
                               stdin=terminal, stdout=subprocess.PIPE, stderr=terminal, env=env)
    os.close(terminal)
    seen = b""

    def read_until(text: bytes) -> None:
        nonlocal seen

        def more() -> bool:
            nonlocal seen
            if text in seen:
                return True
            if not select.select([main], [], [], 0.05)[0]:
                return False
            try:
                seen += os.read(main, 4096)
            except OSError:  # the terminal closed: the process ended
                return True
            return text in seen

        wait_until(more, f"the terminal showed {text!r}", limit=HANG_S)

    read_until(b"(kept in the system keyring): ")
    os.write(main, b"sk-typed\n")
    read_until(b"error:")
    read_until(b"\n")
    process.wait(HANG_S)
    os.close(main)
    assert process.returncode == 1
    assert b"The server 'box' needs an API key (kept in the system keyring): " in seen
    assert b"sk-typed" not in seen  # not echoed
    assert openai_stub.authorizations[-1] == "Bearer sk-typed"  # checked with the typed key before keeping it
    assert b"error: No system keyring is available here, so the key for 'box' was not saved." in seen
