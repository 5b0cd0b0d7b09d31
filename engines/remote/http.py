"""Talking to an OpenAI-compatible server: one client set-up, and every failure in one sentence.

httpx2 (the HTTP client huggingface_hub and openai already bring) with:

* TLS always verified, against the system's certificate store, or the
  file ``SSL_CERT_FILE`` names for a private certificate authority: there
  is no switch to turn verification off, here or in the settings;
* bounded waits: a connection within :data:`CONNECT_TIMEOUT_S`, and then
  never more than the server's read timeout between two pieces of an
  answer, so a server that hangs is reported, not waited for forever;
* no redirects followed (an API that redirects is misconfigured, and a
  redirect would carry the key elsewhere);
* a socket handed to the caller as soon as it is connected, so Stop can
  shut it from another thread and a blocked read returns at once.

:func:`failure` turns whatever httpx2 raises into an :class:`EngineError`
whose message is one line naming the server and what to do: refused,
unknown host, no answer in time, a certificate that is not trusted, a
dropped stream. :func:`http_failure` does the same for an HTTP error
status, quoting the server's own error message when it sent one.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from typing import Callable

from engines.errors import EngineError, ErrorKind
from engines.remote.spec import CONNECT_TIMEOUT_S

USER_AGENT = "Atelier/0.1"
LIST_TIMEOUT_S = 20.0  # for GET /models: a listing is small, even from a busy server
MAX_LIST_BYTES = 4 * 2**20
MAX_ERROR_BYTES = 64 * 1024
_QUOTE_CHARS = 300


class KeyRefused(EngineError):
    """The server wants an API key (401/403): the one failure a front end may answer by asking for the key."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.BAD_INPUT, message)

    def __reduce__(self):
        return (type(self), (self.message,))


@dataclass(frozen=True)
class ListedModel:
    id: str
    context_length: int | None = None  # when the server says (vLLM's max_model_len, llama-server's n_ctx_train)


def open_client(key: str | None, read_timeout_s: float):
    """An httpx2 client for one server: verified TLS, bounded waits, no redirects, the key as a Bearer token."""
    import httpx2

    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    timeout = httpx2.Timeout(connect=CONNECT_TIMEOUT_S, read=read_timeout_s, write=CONNECT_TIMEOUT_S,
                             pool=CONNECT_TIMEOUT_S)
    limits = httpx2.Limits(max_keepalive_connections=0)  # one connection per request: its socket is the one Stop cuts
    return httpx2.Client(verify=True, timeout=timeout, follow_redirects=False, headers=headers, limits=limits)


def socket_tracer(on_socket: Callable[[socket.socket], None]) -> dict:
    """Request extensions that hand the connection's socket to ``on_socket`` once it is connected."""

    def trace(event: str, info: dict) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                on_socket(sock)

    return {"trace": trace}


def cut(sock: socket.socket | None) -> None:
    """Shut ``sock`` from another thread: a read blocked on it returns now (the TLS object is left alone)."""
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


def fetch_models(name: str, base_url: str, key: str | None, timeout_s: float | None = None,
                 on_socket: Callable[[socket.socket], None] | None = None) -> list[ListedModel]:
    """What ``GET {base_url}/models`` lists; EngineError in one sentence when it cannot be had."""
    import httpx2

    url = f"{base_url}/models"
    timeout_s = timeout_s or LIST_TIMEOUT_S
    extensions = socket_tracer(on_socket) if on_socket is not None else None
    try:
        with open_client(key, timeout_s) as client, client.stream("GET", url, extensions=extensions) as response:
            if response.status_code != 200:
                raise http_failure(name, base_url, response, listing=True)
            body = _read_capped(response, MAX_LIST_BYTES)
    except httpx2.HTTPError as exc:
        raise failure(exc, name, base_url, read_timeout_s=timeout_s) from None
    if body is None:
        raise EngineError(ErrorKind.NETWORK, f"The remote server '{name}' sent a model list over "
                          f"{MAX_LIST_BYTES // 2**20} MB: that is not an OpenAI-compatible API at {base_url}.")
    return parse_model_list(name, base_url, body)


def parse_model_list(name: str, base_url: str, body: bytes) -> list[ListedModel]:
    import json

    def garbage(what: str) -> EngineError:
        return EngineError(ErrorKind.NETWORK, f"The remote server '{name}' answered GET /models with {what}, not an "
                           f"OpenAI model list: is {base_url} the API's base URL (it usually ends in /v1)?")

    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise garbage("bytes that are not UTF-8 text") from None
    except ValueError:
        raise garbage(f"text that is not JSON ({one_line(body.decode('utf-8', 'replace'), 60)})") from None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise garbage("JSON without a \"data\" list")
    models = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"].strip():
            raise garbage("an entry without a model id")
        models.append(ListedModel(item["id"], _context_length(item)))
    return models


def _context_length(item: dict) -> int | None:
    for value in (item.get("max_model_len"), item.get("context_length"), (item.get("meta") or {}).get("n_ctx_train")
                  if isinstance(item.get("meta"), dict) else None):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _read_capped(response, limit: int) -> bytes | None:
    parts, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


# ---- failures in words --------------------------------------------------------


def failure(exc: BaseException, name: str, base_url: str, *, during_reply: bool = False,
            read_timeout_s: float | None = None) -> EngineError:
    """An httpx2 (or socket) failure talking to the server ``name``, as one sentence."""
    import httpx2

    where = f"the remote server '{name}' at {base_url}"
    if isinstance(exc, httpx2.ConnectTimeout):
        return EngineError(ErrorKind.NETWORK, f"Could not reach {where}: it did not accept a connection within "
                           f"{CONNECT_TIMEOUT_S:g} s.")
    if isinstance(exc, (httpx2.ReadTimeout, httpx2.WriteTimeout, httpx2.PoolTimeout)):
        wait = f"{read_timeout_s:g} s" if read_timeout_s else "the time allowed"
        if during_reply:
            return EngineError(ErrorKind.NETWORK, f"The remote server '{name}' stopped sending in the middle of the "
                               f"reply (nothing for {wait}); the text so far is kept.")
        return EngineError(ErrorKind.NETWORK, f"The remote server '{name}' did not answer within {wait}. It may be "
                           "busy or stuck; a slow server can be given longer with 'atelier remote add … --timeout'.")
    if isinstance(exc, httpx2.ConnectError):
        return EngineError(ErrorKind.NETWORK, f"Could not reach {where}: {_connect_reason(exc, base_url)}.")
    if isinstance(exc, (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.StreamError, httpx2.DecodingError)):
        if during_reply:
            return EngineError(ErrorKind.NETWORK, f"The connection to the remote server '{name}' was lost in the "
                               "middle of the reply; the text so far is kept.")
        return EngineError(ErrorKind.NETWORK, f"The connection to {where} was lost before it answered "
                           f"({one_line(str(exc) or type(exc).__name__, 120)}).")
    if isinstance(exc, httpx2.UnsupportedProtocol):
        return EngineError(ErrorKind.BAD_INPUT, f"{where[0].upper() + where[1:]} uses a scheme Atelier cannot speak.")
    return EngineError(ErrorKind.NETWORK, f"Talking to {where} failed: {one_line(str(exc) or type(exc).__name__, 160)}.")


def _connect_reason(exc: BaseException, base_url: str) -> str:
    cause = _root(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        why = cause.verify_message or "it is not trusted"
        return (f"its TLS certificate could not be verified ({why}), so Atelier did not connect. Use a certificate "
                "this system trusts, or point SSL_CERT_FILE at your own certificate authority's certificate")
    if isinstance(cause, ssl.SSLError):
        if "WRONG_VERSION_NUMBER" in str(cause) and base_url.startswith("https://"):
            return "it does not speak TLS on that port (try http:// instead of https://)"
        return f"the TLS handshake failed ({one_line(cause.reason or str(cause), 80)})"
    if isinstance(cause, ConnectionRefusedError):
        return "the connection was refused (is the server running, and on that port?)"
    if isinstance(cause, socket.gaierror):
        return "its host name could not be found (check the name, or that you are on the right network)"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror[0].lower() + cause.strerror[1:]
    return one_line(str(exc) or type(exc).__name__, 120)


def _root(exc: BaseException) -> BaseException:
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


def http_failure(name: str, base_url: str, response, *, listing: bool = False, model: str | None = None) -> EngineError:
    """An HTTP error status from the server, as one sentence with the server's own reason when it gave one."""
    status = response.status_code
    try:
        body = _read_capped(response, MAX_ERROR_BYTES) or b""
    except Exception:  # noqa: BLE001 - the reason is a bonus; the status says enough
        body = b""
    reason, code = server_reason(body)
    said = f": {reason}" if reason else ""
    label = f"{status}{' ' + response.reason_phrase if response.reason_phrase else ''}"
    if status in (401, 403):
        return KeyRefused(f"The remote server '{name}' refused the request ({label}{said}): it needs a valid API "
                          "key. Add the server again with its key, or with --api-key-env VAR.")
    if status == 404 and listing:
        hint = "" if base_url.endswith("/v1") else f" The base URL usually ends in /v1: try {base_url}/v1."
        return EngineError(ErrorKind.NOT_FOUND, f"There is no OpenAI-compatible API at {base_url} (GET /models "
                           f"answered {label}).{hint}")
    if status == 404 and model is not None:
        return EngineError(ErrorKind.NOT_FOUND, f"The remote server '{name}' has no model '{model}' ({label}{said}).")
    if code == "context_length_exceeded" or _is_context_overflow(reason):
        return EngineError(ErrorKind.CONTEXT_OVERFLOW, f"The conversation is longer than the context of "
                           f"'{model}' on '{name}'{said or '.'}")
    if status in (301, 302, 303, 307, 308):
        return EngineError(ErrorKind.BAD_INPUT, f"The remote server '{name}' redirects to "
                           f"{one_line(response.headers.get('location', '?'), 120)}; give that as its URL instead.")
    if 400 <= status < 500:
        return EngineError(ErrorKind.BAD_INPUT, f"The remote server '{name}' refused the request ({label}{said}).")
    return EngineError(ErrorKind.NETWORK, f"The remote server '{name}' failed ({label}{said}).")


def server_reason(body: bytes) -> tuple[str, str | None]:
    """(the message, the error code) from an error body in OpenAI's shape, or its first words."""
    import json

    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return one_line(text, _QUOTE_CHARS), None
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or ""
        code = error.get("code")
        return one_line(message if isinstance(message, str) else json.dumps(message), _QUOTE_CHARS), (
            code if isinstance(code, str) else None)
    if isinstance(error, str):
        return one_line(error, _QUOTE_CHARS), None
    return "", None


def _is_context_overflow(reason: str) -> bool:
    low = reason.lower()
    return "context" in low and any(word in low for word in ("length", "window", "exceed", "too long"))


_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def one_line(text: str, limit: int) -> str:
    """Text from a server, made one short line: controls and runs of space collapsed, cut at ``limit``."""
    line = " ".join(_CONTROLS.sub(" ", text).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
