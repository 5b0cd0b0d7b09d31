"""The security layer: every request passes here before any route sees it.

A plain ASGI middleware rather than a FastAPI dependency, so that nothing
(not an unknown path, not a malformed body, not a preflight) is answered
before these checks, in this order:

1. ``Host`` must be one of the allowed names (DNS rebinding), always;
2. an ``Origin`` header, which only browsers send, must be an allowed CORS
   origin: a page elsewhere cannot even trigger a request (no CSRF, also
   without a token); an allowed origin's preflight is answered here;
3. the token, as ``Authorization: Bearer`` (OpenAI) or ``x-api-key``
   (Anthropic), compared in constant time;
4. the body: refused with 413 when its declared length is over the cap,
   read here part by part with a timeout per part (a client that stalls
   gets 408), cut off with 413 as soon as it grows past the cap, and only
   then handed to the route.
"""

from __future__ import annotations

import asyncio
import hmac

from engines.server.config import CLI_HOST_HINT, CLI_ORIGIN_HINT, Limits, host_header_name
from engines.server.errors import ApiError

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_REQUEST_HEADERS = "authorization, content-type, x-api-key, anthropic-version, anthropic-beta"


class SecurityGuard:
    def __init__(self, app, *, hosts: frozenset[str], cors_origins: tuple[str, ...], token: str | None,
                 limits: Limits, origin_hint: str = CLI_ORIGIN_HINT, host_hint: str = CLI_HOST_HINT) -> None:
        self._app = app
        self._host_hint = host_hint
        self._origin_hint = origin_hint  # {origin}: the refused one
        self._hosts = hosts
        self._origins = frozenset(cors_origins)
        self._token = token.encode("utf-8") if token else None
        self._limits = limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = _headers(scope)
        path = scope.get("path", "")
        host = host_header_name(headers.get("host", ""))
        if host not in self._hosts:
            shown = host or "(none)"
            await send_error(send, path, ApiError(403, f"Host '{shown}' is not allowed. This server answers to "
                                                  "localhost and the names it was started for; "
                                                  f"{self._host_hint}.", code="host_not_allowed"))
            return
        origin = headers.get("origin")
        cors = {}
        if origin is not None:
            if origin not in self._origins:
                hint = self._origin_hint.replace("{origin}", origin)
                await send_error(send, path, ApiError(403, f"Requests from web pages at {origin} are not allowed; "
                                                      f"{hint}.", code="origin_not_allowed"))
                return
            cors = {"access-control-allow-origin": origin, "vary": "Origin"}
            if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
                await _send(send, 204, b"", {**cors, "access-control-allow-methods": ALLOWED_METHODS,
                                             "access-control-allow-headers": ALLOWED_REQUEST_HEADERS,
                                             "access-control-max-age": "600"})
                return
        if self._token is not None:
            problem = self._token_problem(headers)
            if problem:
                await send_error(send, path, ApiError(401, problem, code="invalid_api_key",
                                                      headers={"www-authenticate": "Bearer", **cors}))
                return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            try:
                body = await self._read_body(headers, receive)
            except ApiError as exc:
                exc.headers.update(cors)
                exc.headers.setdefault("connection", "close")
                await send_error(send, path, exc)
                return
            receive = _replay(body, receive)
        await self._app(scope, receive, _with_headers(send, cors) if cors else send)

    def _token_problem(self, headers: dict[str, str]) -> str | None:
        given = None
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            given = authorization[7:].strip()
        elif "x-api-key" in headers:
            given = headers["x-api-key"].strip()
        if not given:
            return ("Missing API key. Send it as 'Authorization: Bearer TOKEN' or 'x-api-key: TOKEN'; "
                    "'atelier serve --show-token' prints it.")
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._token):
            return "Incorrect API key provided. 'atelier serve --show-token' prints the right one."
        return None

    async def _read_body(self, headers: dict[str, str], receive) -> bytes:
        cap = self._limits.max_body_bytes
        too_large = ApiError(413, f"The request body is larger than the server's limit of {cap:,} bytes.",
                             code="request_too_large")
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, "The Content-Length header is not a number.")
            if int(declared) > cap:
                raise too_large
        parts, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self._limits.body_timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(408, f"The request body stopped arriving for {self._limits.body_timeout_s:g} s; "
                               "the server stopped waiting for it.", code="request_timeout") from None
            if message["type"] == "http.disconnect":
                raise ApiError(400, "The client went away before sending the whole body.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise too_large
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


def _headers(scope) -> dict[str, str]:
    """Request headers by lower-case name (the last one wins), decoded as Latin-1 like HTTP itself."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}


def _replay(body: bytes, receive):
    """A ``receive`` that gives the route the body read here, then passes on (to see a disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _with_headers(send, extra: dict[str, str]):
    """A ``send`` that adds ``extra`` (the CORS headers) to the response start."""
    encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in extra.items()]

    async def sender(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": list(message.get("headers", [])) + encoded}
        await send(message)

    return sender


async def send_error(send, path: str, error: ApiError) -> None:
    await _send(send, error.status, error.json_bytes(path), {"content-type": "application/json", **error.headers})


async def _send(send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    raw.append((b"content-length", str(len(body)).encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
