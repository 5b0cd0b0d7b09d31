"""Errors in each API's own JSON shape, with the status codes its clients expect.

The official clients turn a status code into an exception class
(``openai.NotFoundError`` for 404, ``anthropic.RateLimitError`` for 429...)
and show the body's message, so every failure, whether it is raised by the
security layer, by request validation or by an engine, becomes one
:class:`ApiError` and is written in the shape of the API that was called:

* OpenAI: ``{"error": {"message", "type", "param", "code"}}``;
* Anthropic (``/v1/messages``): ``{"type": "error", "error": {"type", "message"}}``.

:func:`from_engine_error` is the one mapping from an engine's
:class:`~engines.errors.ErrorKind` to an HTTP status and code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from engines.errors import EngineError, ErrorKind

ANTHROPIC_PATH_PREFIX = "/v1/messages"

# Anthropic names its error types by status rather than by cause.
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 408: "timeout_error", 413: "request_too_large",
                    429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}

# (HTTP status, OpenAI error type, OpenAI code) for each engine error kind.
_ENGINE_KINDS: dict[str, tuple[int, str, str | None]] = {
    ErrorKind.BAD_INPUT: (400, "invalid_request_error", None),
    ErrorKind.CONTEXT_OVERFLOW: (400, "invalid_request_error", "context_length_exceeded"),
    ErrorKind.UNSUPPORTED: (400, "invalid_request_error", "model_not_supported"),
    ErrorKind.NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    ErrorKind.MODEL_FILE: (500, "server_error", "model_file_unusable"),
    ErrorKind.MEMORY: (503, "server_error", "insufficient_memory"),
    ErrorKind.WONT_FIT: (503, "server_error", "insufficient_memory"),
    ErrorKind.UNAVAILABLE: (503, "server_error", "engine_unavailable"),
    ErrorKind.BUSY: (503, "server_error", "busy"),
    ErrorKind.CANCELLED: (503, "server_error", "cancelled"),
    ErrorKind.CRASHED: (500, "server_error", "engine_crashed"),
}


@dataclass(eq=False)  # compared and hashed by identity, as exceptions are
class ApiError(Exception):
    """A failure to answer with ``status``; ``message`` is written for the person reading the client's error."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self, path: str) -> dict:
        """The JSON body for a request to ``path``, in that API's shape."""
        if is_anthropic(path):
            return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(self.status, "api_error"),
                                               "message": self.message}}
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def json_bytes(self, path: str) -> bytes:
        return json.dumps(self.body(path)).encode("utf-8")


def is_anthropic(path: str) -> bool:
    return path == ANTHROPIC_PATH_PREFIX or path.startswith(ANTHROPIC_PATH_PREFIX + "/")


def from_engine_error(exc: EngineError, param: str | None = None) -> ApiError:
    """The engine's own sentence, with the status and code its kind maps to (500 for kinds not listed)."""
    status, type_, code = _ENGINE_KINDS.get(exc.kind, (500, "server_error", str(exc.kind) or None))
    return ApiError(status, exc.message, type_, code, param if status == 400 else None)


def model_not_found(message: str) -> ApiError:
    return ApiError(404, message, "invalid_request_error", "model_not_found", "model")


def queue_full(message: str, retry_after_s: float) -> ApiError:
    """429 with ``Retry-After`` in whole seconds (at least 1), which both official clients honour."""
    seconds = max(1, int(-(-retry_after_s // 1)))
    return ApiError(429, message, "rate_limit_error", "rate_limit_exceeded", headers={"Retry-After": str(seconds)})


def internal(where: str) -> ApiError:
    return ApiError(500, f"The server failed unexpectedly ({where}); the details are in the server log.",
                    "server_error", "internal_error")
