"""Hub search against a fake Hub on 127.0.0.1 that answers what huggingface_hub asks.

huggingface_hub 2.4 calls ``GET /api/models?search=..&filter=gguf&sort=downloads&limit=N``
for :meth:`HfApi.list_models` and ``GET /api/models/{owner}/{name}?blobs=true`` for
:meth:`HfApi.model_info` with ``files_metadata=True`` (no ``/revision/`` part when
no revision is given); the fake answers those with the JSON shapes the Hub uses.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from engines.errors import EngineError, ErrorKind
from engines import network
from engines.library.hub_search import HubFile, list_gguf_files, quantization_from_name, search_gguf
from engines.network import OfflineError
from engines.library.remote_gguf import GATED, NETWORK, NOT_FOUND

SHA_A = "a" * 64
SHA_B = "b" * 64


def sibling(name: str, size: int, sha: str | None = None) -> dict:
    entry = {"rfilename": name, "size": size, "blobId": "0" * 40}
    if sha:
        entry["lfs"] = {"size": size, "sha256": sha, "pointerSize": 135}
    return entry


MODELS = [
    {"_id": "1", "id": "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "modelId": "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
     "author": "Qwen", "downloads": 90000, "likes": 120, "tags": ["gguf", "chat"], "private": False,
     "createdAt": "2024-09-17T14:09:37.000Z", "library_name": "gguf"},
    {"_id": "2", "id": "bartowski/Qwen2.5-7B-Instruct-GGUF", "modelId": "bartowski/Qwen2.5-7B-Instruct-GGUF",
     "downloads": 50000, "likes": 30, "tags": ["gguf"], "private": False, "gated": "manual",
     "createdAt": "2024-09-18T10:00:00.000Z"},
]

REPOS = {
    "Qwen/Qwen2.5-7B-Instruct-GGUF": [
        sibling(".gitattributes", 1_600),
        sibling("README.md", 4_000),
        sibling("qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf", 680_000_000, SHA_B),
        sibling("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", 3_990_000_000, SHA_A),
        sibling("qwen2.5-7b-instruct-q2_k.gguf", 3_020_000_000, SHA_A),
        sibling("qwen2.5-7b-instruct-q8_0-00001-of-00003.gguf", 3_710_000_000, SHA_A),
        sibling("qwen2.5-7b-instruct-q8_0-00003-of-00003.gguf", 700_000_000, SHA_B),
        sibling("mmproj-model-f16.gguf", 851_000_000, SHA_B),
        sibling("small-no-lfs-Q8_0.gguf", 1_000),
    ],
}


class FakeHub:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hub._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = parse_qs(parts.query)
        self.requests.append({"path": parts.path, "query": query, "auth": h.headers.get("Authorization")})
        if parts.path == "/api/models":
            needle = query.get("search", [""])[0].lower()
            found = [m for m in MODELS if needle in m["id"].lower()][: int(query.get("limit", ["100"])[0])]
            return self._json(h, 200, found)
        repo = parts.path.removeprefix("/api/models/")
        if repo == "private/secret-GGUF":
            return self._json(h, 401, {"error": "Invalid username or password."},
                              {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Invalid username or password."})
        if repo == "broken/server-GGUF":
            return self._json(h, 500, {"error": "Internal Error"})
        if repo in REPOS:
            return self._json(h, 200, {"id": repo, "sha": "c" * 40, "private": False, "siblings": REPOS[repo]})
        return self._json(h, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

    @staticmethod
    def _json(h, status: int, body, headers: dict | None = None) -> None:
        payload = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(payload)


@pytest.fixture
def hub(monkeypatch):
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.delenv("ATELIER_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_env_token_must_not_leak")  # huggingface_hub's own fallback
    monkeypatch.setattr(network, "hf_token", lambda: None)  # no keyring in tests
    yield server
    server.close()


def test_search_asks_for_gguf_sorted_by_downloads(hub):
    repos = search_gguf("qwen", limit=5)
    assert [r.id for r in repos] == ["Qwen/Qwen2.5-1.5B-Instruct-GGUF", "bartowski/Qwen2.5-7B-Instruct-GGUF"]
    request = hub.requests[-1]
    assert request["path"] == "/api/models"
    assert request["query"]["search"] == ["qwen"]
    assert request["query"]["filter"] == ["gguf"]
    assert request["query"]["sort"] == ["downloads"]
    assert request["query"]["limit"] == ["5"]
    assert request["auth"] is None  # no Settings token: nothing sent, not even HF_TOKEN's
    first, second = repos
    assert (first.author, first.downloads, first.likes, first.gated) == ("Qwen", 90000, 120, False)
    assert first.last_modified is not None and first.last_modified.year == 2024
    assert second.author == "bartowski" and second.gated == "manual"
    assert first.url == f"{hub.endpoint}/Qwen/Qwen2.5-1.5B-Instruct-GGUF"


def test_search_blank_query_and_limit_bounds(hub):
    assert search_gguf("   ") == []
    assert hub.requests == []
    search_gguf("qwen", limit=10_000)
    assert hub.requests[-1]["query"]["limit"] == ["100"]


def test_search_sends_the_settings_token(hub, monkeypatch):
    monkeypatch.setattr(network, "hf_token", lambda: "hf_settings")
    search_gguf("qwen")
    assert hub.requests[-1]["auth"] == "Bearer hf_settings"


def test_list_files_groups_splits_and_reads_quantizations(hub):
    files = list_gguf_files("Qwen/Qwen2.5-7B-Instruct-GGUF")
    request = hub.requests[-1]
    assert request["path"] == "/api/models/Qwen/Qwen2.5-7B-Instruct-GGUF"
    assert request["query"].get("blobs", [""])[0].lower() == "true"  # files_metadata=True
    by_quant = {f.quantization: f for f in files if not f.is_projector}
    assert set(by_quant) == {"Q2_K", "Q4_K_M", "Q8_0"}
    q4 = by_quant["Q4_K_M"]
    assert q4.is_split and q4.complete and q4.expected_parts == 2
    assert q4.path == "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf"  # what llama.cpp opens
    assert [p.path for p in q4.parts] == [
        "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf"]
    assert q4.size == 3_990_000_000 + 680_000_000 and q4.sha256 is None
    assert [p.sha256 for p in q4.parts] == [SHA_A, SHA_B]
    q8 = next(f for f in files if f.quantization == "Q8_0" and f.is_split)
    assert not q8.complete and len(q8.parts) == 2 and q8.expected_parts == 3
    q2 = by_quant["Q2_K"]
    assert not q2.is_split and q2.sha256 == SHA_A and q2.size == 3_020_000_000
    assert files[-1].is_projector and files[-1].quantization == "F16"  # projectors last
    models = [f for f in files if not f.is_projector]
    assert [f.size for f in models] == sorted(f.size for f in models)
    assert all(f.path.endswith(".gguf") for f in files)  # README, .gitattributes dropped
    small = next(f for f in files if f.path == "small-no-lfs-Q8_0.gguf")
    assert small.sha256 is None and small.size == 1_000


def test_unknown_repo_private_repo_and_bad_name(hub):
    with pytest.raises(EngineError) as info:
        list_gguf_files("nobody/nothing-GGUF")
    assert info.value.kind == NOT_FOUND and "nobody/nothing-GGUF" in info.value.message
    with pytest.raises(EngineError) as info:
        list_gguf_files("private/secret-GGUF")
    assert info.value.kind == GATED and info.value.message == (
        "The Hub needs a token to show the repository private/secret-GGUF: it is private or gated, or does not "
        "exist. Add your Hugging Face token in Settings.")
    with pytest.raises(EngineError) as info:
        list_gguf_files("not a repo id")
    assert info.value.kind == ErrorKind.BAD_INPUT


def test_invalid_token_is_named_as_such(hub, monkeypatch):
    monkeypatch.setattr(network, "hf_token", lambda: "hf_expired")
    with pytest.raises(EngineError) as info:
        list_gguf_files("private/secret-GGUF")
    assert info.value.kind == GATED and "refused your token" in info.value.message
    assert hub.requests[-1]["auth"] == "Bearer hf_expired"


def test_server_error_and_unreachable_hub(hub, monkeypatch):
    with pytest.raises(EngineError) as info:
        list_gguf_files("broken/server-GGUF")
    assert info.value.kind == NETWORK and info.value.message == "The Hugging Face Hub had a server error (500): try again later."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(EngineError) as info:
        list_gguf_files("Qwen/Qwen2.5-7B-Instruct-GGUF")
    assert info.value.kind == NETWORK
    assert info.value.message == (f"Could not reach Hugging Face: 127.0.0.1:{port} refused the connection. "
                                  "Check your internet connection, or a firewall that may block it.")


def hub_must_not_be_called(monkeypatch) -> list:
    """Record any huggingface_hub request: a failed quick check must stop the search before one."""
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "list_models", lambda self, **kw: calls.append(kw) or [])
    monkeypatch.setattr(HfApi, "model_info", lambda self, *a, **kw: calls.append(a))
    return calls


def test_an_unknown_host_name_fails_at_once_in_one_sentence(monkeypatch):
    """Offline, huggingface_hub retries a failed name lookup five times (~24 s); one lookup decides instead."""
    import socket as socket_module

    calls = hub_must_not_be_called(monkeypatch)
    lookups = []

    def no_dns(host, *args, **kwargs):
        lookups.append(host)
        raise socket_module.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket_module, "getaddrinfo", no_dns)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.test")
    for call in (lambda: search_gguf("qwen"), lambda: list_gguf_files("Qwen/Qwen2.5-7B-Instruct-GGUF")):
        with pytest.raises(EngineError) as info:
            call()
        assert info.value.kind == NETWORK
        assert info.value.message == ("Could not reach Hugging Face: the name hub.example.test could not be "
                                      "looked up. Check that this computer is connected to the internet.")
    assert lookups == ["hub.example.test", "hub.example.test"]  # one lookup per action, no retries
    assert calls == []


def test_behind_a_proxy_the_request_itself_decides(hub, monkeypatch):
    """With a proxy, the proxy resolves names: no direct lookup or connection is tried first."""
    import socket as socket_module

    def no_direct_lookup(*args, **kwargs):
        raise AssertionError("looked a name up directly although a proxy is set")

    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.test")
    monkeypatch.setenv("https_proxy", hub.endpoint)  # the fake Hub plays the proxy: it answers every path
    monkeypatch.setenv("HTTPS_PROXY", hub.endpoint)
    monkeypatch.setattr(socket_module, "getaddrinfo", no_direct_lookup)
    from engines.library.reachability import check_reachable

    check_reachable("https://hub.example.test")  # returns: nothing to check here


def test_offline_mode_raises_before_any_socket(monkeypatch):
    monkeypatch.setenv("ATELIER_OFFLINE", "1")

    def forbidden(*args, **kwargs):
        raise AssertionError("a socket was opened in offline mode")

    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket.socket, "connect_ex", forbidden)
    with pytest.raises(OfflineError):
        search_gguf("qwen")
    with pytest.raises(OfflineError):
        list_gguf_files("Qwen/Qwen2.5-7B-Instruct-GGUF")


@pytest.mark.parametrize(
    "name, label",
    [
        ("qwen2.5-1.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
        ("Meta-Llama-3.1-8B-Instruct-Q8_0.gguf", "Q8_0"),
        ("Llama-3.2-3B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
        ("gemma-3-4b-it-f16.gguf", "F16"),
        ("Qwen2.5-0.5B-Instruct-BF16.gguf", "BF16"),
        ("qwen2.5-0.5b-instruct-fp16.gguf", "F16"),
        ("Llama-3.2-1B-Instruct-Q4_0_4_8.gguf", "Q4_0_4_8"),
        ("gemma-3-1b-it-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("Q8_0/Big-Model-Q8_0-00001-of-00004.gguf", "Q8_0"),
        ("Qwen2.5-7B-Instruct.Q3_K_L.gguf", "Q3_K_L"),
        ("model.gguf", None),
    ],
)
def test_quantization_from_name(name, label):
    assert quantization_from_name(name) == label


def test_hubfile_projector_flag():
    assert HubFile("mmproj-gemma-3-4b-f16.gguf", 1, None).is_projector
    assert not HubFile("gemma-3-4b-it-Q4_K_M.gguf", 1, None).is_projector
