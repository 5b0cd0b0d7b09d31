"""Clients that go away, and a hundred at once: the server cancels, queues within its bound, and stays up.

Real llama.cpp on real models: Gemma 3 270M for a generation long enough
to be interrupted (a base model writing a story at temperature 1 does not
stop on its own within the few tokens read here), the tiny GGUF for the
flood. Nothing here measures time: the assertions are on what the request
log and the scheduler say happened.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.fixtures.api_server import TOKEN, start_server
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.slow  # real engines end to end
HANG_GUARD_S = 300  # only so that a broken server fails the test instead of hanging it
STORY = dict(prompt="Chapter One\n\nThe lighthouse keeper", max_tokens=2000, temperature=1.0, seed=4)
SECRET = "zebra-violet-7731"  # prompt text that must never reach the request log


@pytest.fixture(scope="module")
def gemma(tmp_path_factory, gemma_path):
    running = start_server(tmp_path_factory.mktemp("load-gemma"), {"gemma": gemma_path}, context_length=2048)
    yield running
    running.stop()


def _wait(condition, what: str):
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def _last_id(api) -> int:
    entries = api.server.log.entries()
    return entries[-1].id if entries else 0


def _ended_entry(api, path: str, after: int):
    """The log entry of the next request to ``path`` once its generation has ended (its finish reason is known)."""
    entry = api.server.log.wait_for(lambda e: e.id > after and e.path == path
                                    and e.finish not in (None, "client went away"), HANG_GUARD_S)
    assert entry is not None, f"no finished request to {path} in the log"
    return entry


def test_a_client_that_disconnects_mid_stream_cancels_its_generation(gemma):
    before = _last_id(gemma)
    received = 0
    with gemma.http() as client:
        with client.stream("POST", "/v1/completions", json={"model": gemma.ids["gemma"], "stream": True, **STORY}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    received += 1
                    if received == 3:
                        break  # leaving the block closes the connection mid-stream
    entry = _ended_entry(gemma, "/v1/completions", before)
    assert entry.finish == "cancelled"
    assert entry.status == 200
    # The engine stops at the first token after the cancel: a handful of tokens in flight, not the 2,000 asked for.
    assert received <= entry.completion_tokens < received + 40
    _wait(lambda: not gemma.scheduler.snapshot().running, "the scheduler is idle again")
    assert gemma.is_up()


def test_a_client_that_disconnects_while_waiting_for_a_whole_reply_cancels_it(gemma):
    before = _last_id(gemma)
    body = json.dumps({"model": gemma.ids["gemma"], **STORY}).encode()
    with socket.create_connection(("127.0.0.1", gemma.port), timeout=HANG_GUARD_S) as conn:
        conn.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        _wait(lambda: any(w.state == "running" for w in gemma.scheduler.snapshot().running), "the generation started")
    entry = _ended_entry(gemma, "/v1/completions", before)
    assert entry.finish == "cancelled"
    assert entry.completion_tokens < STORY["max_tokens"]
    _wait(lambda: not gemma.scheduler.snapshot().running, "the scheduler is idle again")
    assert gemma.is_up()


def test_a_hundred_concurrent_clients_get_200_or_429_and_the_server_stays_up(tmp_path):
    api = start_server(tmp_path, {"tiny": write_tiny_llama_gguf(tmp_path / "tiny-llama.gguf")}, context_length=512,
                       max_queue=4, threads=1)
    try:
        answers = _flood(api, 100)
        statuses = [status for status, _, _ in answers]
        assert len(answers) == 100
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) >= 5  # the running one and the queue's four, at least
        assert statuses.count(429) >= 1
        for status, headers, body in answers:
            if status == 429:
                assert int(headers["retry-after"]) >= 1
                assert body["error"]["code"] == "rate_limit_exceeded"
                assert body["error"]["message"].startswith("The engine queue is full (")
            else:
                assert body["object"] == "chat.completion"
        assert api.is_up()
        logged = api.server.log.entries()
        assert sum(1 for entry in logged if entry.status == 429) == statuses.count(429)
        assert SECRET not in repr(logged)
        assert all(SECRET not in entry.line() for entry in logged)
    finally:
        api.stop()


def _flood(api, count: int) -> list[tuple[int, dict, dict]]:
    start = threading.Barrier(count)
    answers: list = []
    lock = threading.Lock()

    def one(index: int) -> None:
        with api.http() as client:
            start.wait()
            response = client.post("/v1/chat/completions", json={
                "model": api.ids["tiny"], "max_tokens": 32, "seed": index, "stream": index % 2 == 1,
                "messages": [{"role": "user", "content": f"Hello world {SECRET}"}]})
            body = _body(response)
        with lock:
            answers.append((response.status_code, dict(response.headers), body))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD_S)
    return answers


def _body(response) -> dict:
    """The JSON answer, or for a stream the last JSON chunk before ``[DONE]`` (its object is a chunk)."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return response.json()
    chunks = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert chunks[-1] == "[DONE]"
    last = json.loads(chunks[-2])
    return {**last, "object": "chat.completion"} if last["object"] == "chat.completion.chunk" else last
