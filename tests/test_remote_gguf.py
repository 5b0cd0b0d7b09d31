"""Reading GGUF headers over HTTP Range from a local server (127.0.0.1 only)."""

from __future__ import annotations

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engines.errors import EngineError, ErrorKind
from engines.gguf import read_gguf_header
from engines import network
from engines.network import OfflineError
from engines.library.remote_gguf import GATED, NETWORK, NOT_FOUND, read_remote_gguf_header
from tests.fixtures.waits import wait_until

MiB = 1024 * 1024


class FileServer:
    """Serves files by URL path, honouring ``Range: bytes=a-b`` unless told not to,
    and records every request: its Range header, status and bytes actually sent."""

    def __init__(
        self, files: dict[str, Path | bytes], honor_range: bool = True, statuses: dict[str, int] | None = None
    ) -> None:
        self.files = files
        self.honor_range = honor_range
        self.statuses = statuses or {}
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def bytes_sent(self) -> int:
        return sum(r["sent"] for r in self.requests)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        name = h.path.lstrip("/")
        record = {"path": name, "range": h.headers.get("Range"), "auth": h.headers.get("Authorization"),
                  "status": None, "sent": 0, "done": False}
        with self.lock:
            self.requests.append(record)
        try:
            if name in self.statuses:
                record["status"] = self.statuses[name]
                h.send_response(self.statuses[name])
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            if name not in self.files:
                record["status"] = 404
                h.send_response(404)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            source = self.files[name]
            data = source if isinstance(source, bytes) else None
            size = len(data) if data is not None else source.stat().st_size
            start, end, status = 0, size - 1, 200
            match = re.match(r"^bytes=(\d+)-(\d*)$", record["range"] or "")
            if self.honor_range and match:
                start = int(match[1])
                end = min(int(match[2]) if match[2] else size - 1, size - 1)
                if start >= size:
                    record["status"] = 416
                    h.send_response(416)
                    h.send_header("Content-Range", f"bytes */{size}")
                    h.send_header("Content-Length", "0")
                    h.end_headers()
                    return
                status = 206
            record["status"] = status
            h.send_response(status)
            h.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            h.send_header("Accept-Ranges", "bytes" if self.honor_range else "none")
            h.end_headers()
            self._send(h, record, source, data, start, end + 1)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: exactly what a header reader should do on a 200
        finally:
            record["done"] = True

    @staticmethod
    def _send(h, record, source, data, start, stop) -> None:
        chunk = 64 * 1024
        if data is not None:
            for pos in range(start, stop, chunk):
                piece = data[pos:min(pos + chunk, stop)]
                h.wfile.write(piece)
                record["sent"] += len(piece)
            return
        with open(source, "rb") as f:
            f.seek(start)
            remaining = stop - start
            while remaining > 0:
                piece = f.read(min(chunk, remaining))
                if not piece:
                    break
                h.wfile.write(piece)
                record["sent"] += len(piece)
                remaining -= len(piece)


@pytest.fixture
def serve():
    servers: list[FileServer] = []

    def start(files, **kwargs) -> FileServer:
        server = FileServer(files, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def no_saved_token(monkeypatch):
    """Never read the developer's keyring or HF_TOKEN."""
    monkeypatch.setattr(network, "hf_token", lambda: None)
    monkeypatch.delenv("ATELIER_OFFLINE", raising=False)


def test_tiny_header_read_remotely_equals_local(serve, tiny_gguf):
    server = serve({"tiny.gguf": tiny_gguf})
    remote = read_remote_gguf_header(server.url("tiny.gguf"))
    assert remote == read_gguf_header(tiny_gguf)
    assert remote.file_size == tiny_gguf.stat().st_size
    assert [r["status"] for r in server.requests] == [206]
    assert server.requests[0]["range"] == f"bytes=0-{4 * MiB - 1}"


def test_small_first_request_fetches_only_the_missing_bytes(serve, tiny_gguf):
    server = serve({"tiny.gguf": tiny_gguf})
    header = read_remote_gguf_header(server.url("tiny.gguf"), first_bytes=512)
    assert header == read_gguf_header(tiny_gguf)
    ranges = [tuple(map(int, re.match(r"bytes=(\d+)-(\d+)", r["range"]).groups())) for r in server.requests]
    assert len(ranges) >= 3
    assert ranges[0] == (0, 511)
    for (_, prev_end), (start, end) in zip(ranges, ranges[1:]):
        assert start == prev_end + 1  # contiguous: nothing fetched twice
        assert end + 1 >= 2 * start or end + 1 == tiny_gguf.stat().st_size  # at least doubling
    assert server.bytes_sent() <= 2 * header.data_offset + 512


def test_gemma_needs_a_second_request_but_only_a_few_megabytes(serve, gemma_path):
    local = read_gguf_header(gemma_path)
    assert local.data_offset > 4 * MiB  # 262k-token vocabulary: the default first 4 MiB are not enough
    server = serve({"gemma.gguf": gemma_path})
    remote = read_remote_gguf_header(server.url("gemma.gguf"))
    assert remote == local
    assert remote.vocab_size == 262144 and remote.architecture == "gemma3"
    assert 2 <= len(server.requests) <= 3
    assert local.data_offset <= server.bytes_sent() <= 12 * MiB
    assert server.bytes_sent() < gemma_path.stat().st_size / 20


def test_server_ignoring_range_is_read_progressively_and_closed(serve, gemma_path):
    server = serve({"gemma.gguf": gemma_path}, honor_range=False)
    remote = read_remote_gguf_header(server.url("gemma.gguf"))
    assert remote == read_gguf_header(gemma_path)
    assert [r["status"] for r in server.requests] == [200]  # one request, read further along the stream
    wait_until(lambda: server.requests[0]["done"], "the client closed the 200 response it read part of")
    assert server.requests[0]["sent"] < gemma_path.stat().st_size / 2  # hung up long before the end


def test_server_ignoring_range_on_a_small_file(serve, tiny_gguf):
    server = serve({"tiny.gguf": tiny_gguf}, honor_range=False)
    assert read_remote_gguf_header(server.url("tiny.gguf"), first_bytes=256) == read_gguf_header(tiny_gguf)
    assert len(server.requests) == 1


def test_header_larger_than_max_bytes_is_refused(serve, gemma_path):
    server = serve({"gemma.gguf": gemma_path})
    with pytest.raises(EngineError) as info:
        read_remote_gguf_header(server.url("gemma.gguf"), first_bytes=MiB, max_bytes=2 * MiB)
    assert info.value.kind == ErrorKind.MODEL_FILE
    assert server.bytes_sent() <= 2 * MiB


def test_not_a_gguf_and_truncated_files(serve, tiny_gguf):
    head = tiny_gguf.read_bytes()[:200]
    server = serve({"page.gguf": b"<!doctype html><html>Not found</html>", "cut.gguf": head})
    with pytest.raises(EngineError) as info:
        read_remote_gguf_header(server.url("page.gguf"))
    assert info.value.kind == ErrorKind.MODEL_FILE and "not a GGUF model file" in info.value.message
    with pytest.raises(EngineError) as info:
        read_remote_gguf_header(server.url("cut.gguf"))
    assert info.value.kind == ErrorKind.MODEL_FILE and info.value.message == (
        "cut.gguf: The file is truncated: it ends after 200 bytes, inside its header (while reading metadata entry "
        "#4), which needs at least 215 bytes. Download it again.")


@pytest.mark.parametrize(
    "status, kind, words",
    [(404, NOT_FOUND, "not found"), (401, GATED, "token"), (403, GATED, "gated"), (503, NETWORK, "server error")],
)
def test_http_errors_become_engine_errors(serve, status, kind, words):
    server = serve({}, statuses={"model.gguf": status})
    with pytest.raises(EngineError) as info:
        read_remote_gguf_header(server.url("model.gguf"))
    assert info.value.kind == kind
    assert words in info.value.message


def test_unreachable_server_is_a_network_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(EngineError) as info:
        read_remote_gguf_header(f"http://127.0.0.1:{port}/model.gguf")
    assert info.value.kind == NETWORK and "127.0.0.1" in info.value.message


def test_token_goes_only_to_the_hub(serve, tiny_gguf, monkeypatch):
    server = serve({"tiny.gguf": tiny_gguf})
    monkeypatch.setattr(network, "hf_token", lambda: "hf_secret")
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    read_remote_gguf_header(server.url("tiny.gguf"))
    assert server.requests[-1]["auth"] is None  # another host: the saved token stays home
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    read_remote_gguf_header(server.url("tiny.gguf"))
    assert server.requests[-1]["auth"] == "Bearer hf_secret"
    read_remote_gguf_header(server.url("tiny.gguf"), token="explicit")
    assert server.requests[-1]["auth"] == "Bearer explicit"


def test_offline_mode_opens_no_socket(monkeypatch):
    monkeypatch.setenv("ATELIER_OFFLINE", "1")

    def forbidden(*args, **kwargs):
        raise AssertionError("a socket was opened in offline mode")

    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket.socket, "connect_ex", forbidden)
    with pytest.raises(OfflineError) as info:
        read_remote_gguf_header("https://huggingface.co/a/b/resolve/main/model.gguf")
    assert info.value.kind == network.OFFLINE
