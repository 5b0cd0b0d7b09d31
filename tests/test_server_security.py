"""The API server's safe defaults, against a real server on 127.0.0.1 (no engine runs here).

Each check is one of the peers' advisories turned into a test (GUIDE.md §9):
the Host header checked always (DNS rebinding: Jan, Ollama), a token by
default (Ollama had none), no wildcard CORS (GPT4All), 404 for unknown
paths (LM Studio answered 200), capped bodies, and slow clients cut off.
Every refusal is in the API's own error shape, and the server stays up.
"""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest

from engines.errors import EngineError
from engines.server import Limits, ServerConfig, api_token
from engines.server.config import allowed_host_names
from tests.fixtures.api_server import TOKEN, start_server

HANG_GUARD_S = 120  # only so that a broken server fails the test instead of hanging it


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("api-security"),
                           limits=Limits(max_body_bytes=4096, header_timeout_s=0.5, body_timeout_s=0.5))
    yield running
    running.stop()


def _openai_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def _anthropic_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    return body["error"]


# ---- Host header (DNS rebinding) -------------------------------------------


def test_a_foreign_host_header_is_refused_before_anything_else(api):
    with api.http() as client:
        error = _openai_error(client.get("/v1/models", headers={"Host": "attacker.example"}), 403)
        no_token = _openai_error(api.http(token=None).get("/v1/models", headers={"Host": "attacker.example:8080"}), 403)
    assert error["message"] == ("Host 'attacker.example' is not allowed. This server answers to localhost and the "
                                "names it was started for; start it with --allow-host NAME to add one.")
    assert error["code"] == "host_not_allowed"
    assert no_token["code"] == "host_not_allowed"  # checked before the token: a rebinding page learns nothing
    assert api.is_up()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST.", "localhost:{port}", "127.0.0.1:{port}"])
def test_loopback_host_names_are_allowed(api, host):
    with api.http() as client:
        response = client.get("/v1/models", headers={"Host": host.format(port=api.port)})
    assert response.status_code == 200, response.text


def test_binding_all_interfaces_still_checks_the_host_header():
    names = allowed_host_names("0.0.0.0")
    assert {"localhost", "127.0.0.1", "::1", socket.gethostname().lower()} <= names
    assert "attacker.example" not in names
    assert "box.lan" in allowed_host_names("0.0.0.0", ("Box.LAN.",))


def test_binding_beyond_loopback_requires_the_token():
    with pytest.raises(EngineError) as refused:
        ServerConfig(host="0.0.0.0", token=None).validate()
    assert refused.value.message == ("binding to 0.0.0.0 reaches beyond this machine, so the API token is required "
                                     "there; drop --no-token")
    ServerConfig(host="127.0.0.1", token=None).validate()  # loopback may go without, when asked


# ---- the token ---------------------------------------------------------------


def test_a_missing_token_is_401_in_each_apis_shape(api):
    with api.http(token=None) as client:
        openai_error = _openai_error(client.get("/v1/models"), 401)
        anthropic_error = _anthropic_error(client.post("/v1/messages", json={}), 401)
    assert openai_error == {"message": "Missing API key. Send it as 'Authorization: Bearer TOKEN' or 'x-api-key: "
                            "TOKEN'; 'atelier serve --show-token' prints it.", "type": "invalid_request_error",
                            "param": None, "code": "invalid_api_key"}
    assert anthropic_error["type"] == "authentication_error"
    assert anthropic_error["message"] == openai_error["message"]


def test_a_wrong_token_is_401(api):
    with api.http(token="not-the-token") as client:
        response = client.get("/v1/models")
    error = _openai_error(response, 401)
    assert error["message"] == "Incorrect API key provided. 'atelier serve --show-token' prints the right one."
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_token_is_taken_as_bearer_or_as_x_api_key(api):
    with api.http(token=None) as client:
        assert client.get("/v1/models", headers={"x-api-key": TOKEN}).status_code == 200
        assert client.get("/v1/models", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


@pytest.mark.slow
def test_the_official_clients_name_a_wrong_key_as_such(api):
    import anthropic
    import openai

    with pytest.raises(openai.AuthenticationError) as openai_error:
        api.openai(api_key="wrong-key-123").models.list()
    assert openai_error.value.code == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError):
        api.anthropic(api_key="wrong-key-123").messages.create(model="x", max_tokens=1, messages=[])


def test_the_generated_token_is_private_stable_and_overridable(tmp_path, monkeypatch):
    monkeypatch.delenv("ATELIER_API_KEY", raising=False)
    token, source = api_token(tmp_path)
    assert source == str(tmp_path / "server-token")
    assert len(token) >= 40
    assert stat.S_IMODE(os.stat(source).st_mode) == 0o600
    assert api_token(tmp_path) == (token, source)
    monkeypatch.setenv("ATELIER_API_KEY", "from-the-environment")
    assert api_token(tmp_path) == ("from-the-environment", "$ATELIER_API_KEY")
    monkeypatch.setenv("ATELIER_API_KEY", "short")
    with pytest.raises(EngineError) as refused:
        api_token(tmp_path)
    assert refused.value.message == "$ATELIER_API_KEY must be at least 8 printable characters without spaces"


# ---- paths, methods, CORS ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/docs", "/openapi.json", "/v1", "/v1/nothing", "/v2/models", "/v1/models/../../etc"])
def test_unknown_paths_are_404(api, path):
    with api.http() as client:
        response = client.get(path)
    error = _openai_error(response, 404)
    assert error["message"].startswith("Unknown path: GET ")
    assert error["message"].endswith(". The API is under /v1 (GET /v1/models lists the models).")


def test_a_wrong_method_is_405(api):
    with api.http() as client:
        error = _openai_error(client.get("/v1/chat/completions"), 405)
    assert error["message"] == "GET is not allowed on /v1/chat/completions."


def test_cors_is_off_by_default_and_foreign_pages_are_refused(api):
    with api.http() as client:
        refused = client.get("/v1/models", headers={"Origin": "http://evil.example"})
        preflight = client.options("/v1/chat/completions", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        plain = client.get("/v1/models")
    error = _openai_error(refused, 403)
    assert error["message"] == ("Requests from web pages at http://evil.example are not allowed; start the server "
                                "with --cors-origin http://evil.example to allow them.")
    assert preflight.status_code == 403
    for response in (refused, preflight, plain):
        assert not any(name.startswith("access-control-") for name in response.headers)


def test_an_allowed_origin_gets_exactly_its_own_origin_back(tmp_path):
    running = start_server(tmp_path, cors_origins=("http://localhost:3000",))
    try:
        with running.http() as client:
            preflight = client.options("/v1/chat/completions", headers={
                "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"})
            allowed = client.get("/v1/models", headers={"Origin": "http://localhost:3000"})
            other = client.get("/v1/models", headers={"Origin": "http://localhost:3001"})
    finally:
        running.stop()
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert allowed.headers["vary"] == "Origin"
    for response in (preflight, allowed):
        assert "access-control-allow-credentials" not in response.headers
    assert other.status_code == 403


@pytest.mark.parametrize("origin, message", [
    ("*", "a wildcard CORS origin would let any web page use the API; name each origin exactly, "
          "e.g. --cors-origin http://localhost:3000"),
    ("localhost:3000", "'localhost:3000' is not an origin; write it as scheme://host[:port], e.g. http://localhost:3000"),
])
def test_a_wildcard_or_malformed_cors_origin_is_refused(origin, message):
    with pytest.raises(EngineError) as refused:
        ServerConfig(token=TOKEN, cors_origins=(origin,)).validate()
    assert refused.value.message == message


# ---- bodies and slow clients -------------------------------------------------------


def test_a_body_over_the_cap_is_413_before_it_is_read(api):
    with api.http() as client:
        declared = client.post("/v1/chat/completions", content=b"x" * 5000, headers={"Content-Type": "application/json"})
        streamed = client.post("/v1/chat/completions", content=(b"x" * 1000 for _ in range(10)),
                               headers={"Content-Type": "application/json"})
        anthropic_error = _anthropic_error(client.post("/v1/messages", content=b"x" * 5000), 413)
    for response in (declared, streamed):
        error = _openai_error(response, 413)
        assert error["message"] == "The request body is larger than the server's limit of 4,096 bytes."
    assert anthropic_error["type"] == "request_too_large"
    assert api.is_up()


def test_a_client_that_stops_sending_its_body_gets_408(api):
    with socket.create_connection(("127.0.0.1", api.port), timeout=HANG_GUARD_S) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"model\":")
        answer = _read_until_closed(conn)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body)["error"]["message"] == ("The request body stopped arriving for 0.5 s; the server "
                                                    "stopped waiting for it.")
    assert api.is_up()


def test_a_client_that_never_finishes_its_request_head_is_disconnected(api):
    with socket.create_connection(("127.0.0.1", api.port), timeout=HANG_GUARD_S) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert _read_until_closed(conn) == b""  # closed without an answer: no request was made
    assert api.is_up()


def _read_until_closed(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


# ---- malformed requests ------------------------------------------------------------


def test_malformed_json_is_400_in_each_apis_shape(api):
    with api.http() as client:
        openai_error = _openai_error(client.post("/v1/chat/completions", content=b'{"model": "x", ',
                                                 headers={"Content-Type": "application/json"}), 400)
        anthropic_error = _anthropic_error(client.post("/v1/messages", content=b"{nope",
                                                       headers={"Content-Type": "application/json"}), 400)
        no_json = _openai_error(client.post("/v1/chat/completions", content=b'{"model": "x"}'), 400)
        not_object = _openai_error(client.post("/v1/embeddings", json=[1, 2]), 400)
    assert openai_error["message"] == "The request body is not valid JSON: Expecting property name enclosed in double quotes."
    assert anthropic_error == {"type": "invalid_request_error",
                               "message": "The request body is not valid JSON: Expecting property name enclosed in double quotes."}
    assert no_json["message"] == "Send the request body as JSON, with the header 'Content-Type: application/json'."
    assert not_object["message"] == ("The request body must be a JSON object (Input should be a valid dictionary or "
                                     "object to extract fields from).")
    assert api.is_up()


def test_a_wrong_type_names_its_field(api):
    with api.http() as client:
        wrong_type = _openai_error(client.post("/v1/chat/completions", json={
            "model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}), 400)
        missing = _openai_error(client.post("/v1/chat/completions", json={"model": "x"}), 400)
        nested = _openai_error(client.post("/v1/chat/completions", json={
            "model": "x", "messages": [{"role": "robot", "content": "hi"}]}), 400)
        stop = _openai_error(client.post("/v1/completions", json={"model": "x", "prompt": "a", "stop": 5}), 400)
        anthropic_error = _anthropic_error(client.post("/v1/messages", json={
            "model": "x", "messages": [{"role": "user", "content": "hi"}]}), 400)
    assert wrong_type == {"message": "Invalid value for 'max_tokens': Input should be a valid integer, unable to parse "
                          "string as an integer.", "type": "invalid_request_error", "param": "max_tokens", "code": None}
    assert missing["message"] == "Missing required parameter: 'messages'."
    assert nested["param"] == "messages[0].role"
    assert nested["message"] == ("Invalid value for 'messages[0].role': Input should be 'system', 'developer', "
                                 "'user', 'assistant', 'tool' or 'function'.")
    assert stop["message"] == "Invalid value for 'stop': Value error, stop must be a string or a list of strings."
    assert anthropic_error["message"] == "Missing required parameter: 'max_tokens'."
    assert api.is_up()


@pytest.mark.parametrize("name", ["no-such-model", "/etc/passwd", "../models.json", "~/.ssh/id_rsa"])
def test_a_model_that_is_not_installed_is_404_and_no_path_is_probed(api, name):
    with api.http() as client:
        error = _openai_error(client.post("/v1/chat/completions", json={
            "model": name, "messages": [{"role": "user", "content": "hi"}]}), 404)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert error["message"].startswith(f"No installed model is called '{name}'.")
    assert api.is_up()


def test_the_anthropic_api_says_not_found_in_its_own_words(api):
    import anthropic

    with pytest.raises(anthropic.NotFoundError) as missing:
        api.anthropic().messages.create(model="no-such-model", max_tokens=8,
                                        messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body == {"type": "error", "error": {
        "type": "not_found_error",
        "message": "No installed model is called 'no-such-model'. See 'atelier models list' (and --catalog)."}}
